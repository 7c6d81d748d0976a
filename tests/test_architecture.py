"""The layering the package promises: the edge runtime runs without torch, and imports flow one way."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fad_edge"

# What `pip install fad-edge` (the edge runtime) does not install.
TRAINING_ONLY = ("torch", "scipy", "sklearn", "librosa", "soundfile", "av", "onnx", "onnxscript", "onnxslim",
                 "onnxsim", "matplotlib", "safetensors", "numba")

BLOCKER = f"""
import importlib.abc, sys

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {TRAINING_ONLY!r}:
            raise ModuleNotFoundError(f"{{name}} is not installed (blocked by the test)", name=name)
        return None

sys.meta_path.insert(0, Refuse())
"""


def _run_without_training_packages(code: str) -> subprocess.CompletedProcess:
    script = BLOCKER + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=PACKAGE.parent)


def test_the_blocker_really_blocks_torch():
    completed = _run_without_training_packages("import torch")
    assert completed.returncode != 0 and "blocked by the test" in completed.stderr


# The runtime modules that run PyTorch (the `torch` and `cuda` backends); every other runtime module, and
# what they stand on, imports without the training packages.
TORCH_RUNTIME = ("torch_runner", "cuda_runner", "cuda_graphs", "half_precision")


def test_every_edge_runtime_module_imports_where_torch_cannot():
    runtime = sorted(path.stem for path in (PACKAGE / "runtime").glob("*.py")
                     if path.stem not in TORCH_RUNTIME and path.stem != "__init__")
    modules = [f"fad_edge.runtime.{name}" for name in runtime] + [
        "fad_edge.backends", "fad_edge.artifact", "fad_edge.sampling", "fad_edge.digests", "fad_edge.json_report",
        "fad_edge.data.inputs", "fad_edge.data.audio_features", "fad_edge.data.normalization"]
    completed = _run_without_training_packages(f"""
        import importlib
        for name in {modules!r}:
            importlib.import_module(name)
        print("imported", len({modules!r}))
    """)
    assert completed.returncode == 0, completed.stderr
    assert "fad_edge.runtime.trt_runner" in modules and "fad_edge.runtime.face" in modules


@pytest.mark.slow
def test_ort_runner_and_stream_run_where_torch_cannot_be_imported(tiny_export):
    completed = _run_without_training_packages(f"""
        import sys
        import numpy as np
        from fad_edge.runtime.select import open_runner
        from fad_edge.runtime.stream import ListenerStream

        rng = np.random.default_rng(0)
        frames = rng.integers(0, 255, (20, 40, 40, 3), dtype=np.uint8)
        audio = (0.1 * rng.standard_normal(20 * 16000 // 30 + 800)).astype(np.float32)
        for precision in ("fp32", "int8"):
            with open_runner({str(tiny_export)!r}, "ort", precision) as runner:
                motion = runner.run(frames, audio, 16000)
                assert motion.shape == (20, 56) and np.all(np.isfinite(motion))
        with open_runner({str(tiny_export)!r}, "ort", "fp32", steps=3) as runner:
            assert np.all(np.isfinite(runner.run(frames, audio, 16000)))
        with ListenerStream(open_runner({str(tiny_export)!r})) as stream:
            for k, frame in enumerate(frames[:16]):
                stream.push_audio(audio[k * 533 : (k + 1) * 533], 16000)
                stream.push_video(frame, k / 30)
        assert stream.stats().clips == 2
        assert "torch" not in sys.modules
        print("ran without torch")
    """)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "ran without torch" in completed.stdout


@pytest.mark.slow
def test_the_profiler_runs_where_torch_cannot_be_imported(tiny_export, tmp_path):
    """`fad-edge profile` belongs to the edge install: it runs the ONNX Runtime runner only."""
    completed = _run_without_training_packages(f"""
        import sys
        from fad_edge.cli import main
        sys.argv = ["fad-edge", "profile", {str(tiny_export)!r}, "--frames", "8", "--runs", "1", "--warmup", "0",
                    "--threads", "1", "--out", {str(tmp_path / "profile.json")!r}]
        try:
            main()
        finally:
            assert "torch" not in sys.modules
    """)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert (tmp_path / "profile.json").is_file()


@pytest.mark.slow
def test_generate_runs_an_export_on_the_edge_install_with_its_command_line(tiny_export, tmp_path):
    """`pip install 'fad-edge[cli]'`: torch and the training packages absent, soundfile there; generate writes the
    motion and its JSON, and says there is no plot without matplotlib."""
    from fad_edge.data.media import write_video, write_wav

    rng = np.random.default_rng(0)
    video = write_video(tmp_path / "talk.mp4", rng.integers(0, 255, (24, 40, 40, 3), dtype=np.uint8), 30)
    audio = write_wav(tmp_path / "talk.wav", (0.1 * rng.standard_normal(16000)).astype(np.float32), 16000)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "listener.png").write_bytes(b"an earlier run's plot")
    blocked = tuple(name for name in TRAINING_ONLY if name != "soundfile")
    script = BLOCKER.replace(repr(TRAINING_ONLY), repr(blocked)) + textwrap.dedent(f"""
        import sys
        from fad_edge.cli import main
        sys.argv = ["fad-edge", "generate", "--model", {str(tiny_export)!r}, "--video", {str(video)!r},
                    "--audio", {str(audio)!r}, "--out", {str(tmp_path / "out")!r}, "--face", "none"]
        try:
            main()
        finally:
            assert "torch" not in sys.modules and "matplotlib" not in sys.modules
    """)
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                               cwd=PACKAGE.parent)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "no plot: matplotlib is not installed" in completed.stdout + completed.stderr
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["listener.json", "listener_coeffs.npy"]
    assert np.load(tmp_path / "out" / "listener_coeffs.npy").shape == (24, 56)


def test_cli_help_and_a_training_command_without_torch_say_what_to_install():
    completed = _run_without_training_packages("""
        import sys
        from fad_edge.cli import main
        sys.argv = ["fad-edge", "train", "--data", "nowhere", "--out", "nowhere"]
        main()
    """)
    assert completed.returncode == 2, completed.stderr[-2000:]
    assert "fad-edge[train]" in completed.stderr and "Traceback" not in completed.stderr


def _imports(path: Path) -> set[str]:
    """fad_edge modules a file imports, at any depth of the file (lazy imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fad_edge"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("fad_edge"))
    return found


def _module(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")


# Each layer and what it may never import (imports flow downwards only).
FORBIDDEN = {
    "fad_edge.data": ("fad_edge.runtime", "fad_edge.export", "fad_edge.train", "fad_edge.models", "fad_edge.cli",
                      "fad_edge.bench", "fad_edge.evaluation", "fad_edge.artifact", "fad_edge.prosody_pretraining",
                      "fad_edge.video_pretraining", "fad_edge.frozen_video"),
    "fad_edge.sampling": ("fad_edge.runtime", "fad_edge.export", "fad_edge.train", "fad_edge.cli"),
    "fad_edge.models": ("fad_edge.runtime", "fad_edge.export", "fad_edge.train", "fad_edge.cli", "fad_edge.bench",
                        "fad_edge.prosody_pretraining", "fad_edge.video_pretraining", "fad_edge.frozen_video"),
    "fad_edge.artifact": ("fad_edge.runtime", "fad_edge.export", "fad_edge.train", "fad_edge.cli"),
    "fad_edge.backends": ("fad_edge.runtime", "fad_edge.export", "fad_edge.train", "fad_edge.cli"),
    "fad_edge.runtime": ("fad_edge.export", "fad_edge.train", "fad_edge.cli", "fad_edge.bench",
                         "fad_edge.evaluation", "fad_edge.prosody_pretraining", "fad_edge.video_pretraining",
                         "fad_edge.frozen_video"),
    "fad_edge.export": ("fad_edge.train", "fad_edge.cli", "fad_edge.bench", "fad_edge.evaluation"),
}
# A forbidden name covers its submodules and its siblings of one family: "fad_edge.train" also forbids
# train_state, train_precision, ...; "fad_edge.evaluation" also evaluation_report.
FAMILY_SEPARATORS = (".", "_")


def _forbidden(name: str, forbidden: tuple[str, ...]) -> bool:
    return any(name == f or name.startswith(tuple(f + sep for sep in FAMILY_SEPARATORS)) for f in forbidden)


def test_imports_flow_one_way():
    broken = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module(path)
        imports = sorted(_imports(path))
        for layer, forbidden in FORBIDDEN.items():
            if module == layer or module.startswith(layer + "."):
                broken += [f"{module} imports {name}" for name in imports if _forbidden(name, forbidden)]
        if not module.startswith("fad_edge.cli") and module != "fad_edge.__main__":  # the CLI is the top layer
            broken += [f"{module} imports {name}" for name in imports if _forbidden(name, ("fad_edge.cli",))]
    assert not broken, "\n".join(broken)


def test_a_forbidden_name_covers_its_family_but_not_a_longer_word():
    assert _forbidden("fad_edge.train_state", ("fad_edge.train",))
    assert _forbidden("fad_edge.evaluation_report.markdown", ("fad_edge.evaluation",))
    assert not _forbidden("fad_edge.trainer", ("fad_edge.train",)) and not _forbidden("fad_edge.data", ("fad_edge.d",))


def test_no_source_cites_files_outside_the_repository():
    outside = [f"{name}.md" for name in ("DESIGN", "STYLE")]  # design notes that live outside the repository
    offenders = [str(path.relative_to(PACKAGE.parent)) for path in PACKAGE.rglob("*.py")
                 if any(name in path.read_text() for name in outside)]
    assert not offenders
