"""The synthetic listener's rule components and the per-rule diagnostic (`fad-edge rules`)."""

import json

import numpy as np
import pytest
from helpers import run_cli, tiny_checkpoint

from fad_edge.constants import EXPRESSION, HEAD, JAW, N_COEFFS, N_EXPRESSION
from fad_edge.data import layout, synthetic, synthetic_dataset
from fad_edge.data.synthetic import RULES, SyntheticConfig, generate_session, listener_basis, listener_rules
from fad_edge.data.synthetic_dataset import read_session_record, write_synthetic_dataset
from fad_edge.errors import DataError
from fad_edge.rule_diagnostic import score_rules


def _listener_before_the_components(rng, state, config):
    """`synthetic._listener` as it was before it kept the rule components, verbatim: the reference."""
    n = len(state.head)
    jitter = lambda: int(rng.integers(-config.lag_jitter, config.lag_jitter + 1))  # noqa: E731
    lags = {"nod": synthetic.LAG_NOD + jitter(), "smile": synthetic.LAG_SMILE + jitter(),
            "brow": synthetic.LAG_BROW + jitter(), "head": synthetic.LAG_HEAD + jitter()}
    lags = {k: max(0, v) for k, v in lags.items()}
    nod_shape = 0.15 * np.sin(np.linspace(0, 3 * np.pi, 20)) * np.exp(-np.linspace(0, 2, 20))
    brow_shape = np.sin(np.linspace(0, np.pi, 24)) ** 2
    nods = [frame + lags["nod"] for frame, rising in state.speech.pauses if not rising]
    raises = [frame + lags["brow"] for frame, rising in state.speech.pauses if rising]
    nod = synthetic._pulse(n, nods, nod_shape) * rng.uniform(0.85, 1.15)
    listener_brow = np.clip(synthetic._pulse(n, raises, brow_shape), 0, 1.2) * rng.uniform(0.85, 1.15)
    listener_smile = 0.8 * synthetic._delay(synthetic._smooth(state.smile, 5), lags["smile"])
    listener_yaw = 0.5 * synthetic._delay(state.head[:, 1], lags["head"])

    idle = lambda scale: synthetic._smooth(rng.standard_normal(n), 25) * scale * 4  # noqa: E731
    listener = np.zeros((n, N_COEFFS))
    factors_l = np.stack([listener_smile, listener_brow, synthetic._blinks(rng, n) * 0.5,
                          idle(config.idle_expression), idle(config.idle_expression)], axis=1)
    basis = synthetic._basis(synthetic._LISTENER_BASIS_SEED, 5, np.array([1, 0.8, 0.4, 0.5, 0.5]))
    listener[:, EXPRESSION] = factors_l @ basis.T
    listener[:, EXPRESSION] += config.coefficient_noise * rng.standard_normal((n, N_EXPRESSION))
    listener[:, JAW.start] = 0.02 + 0.01 * np.abs(idle(1.0))
    listener[:, HEAD.start] = nod + idle(config.idle_head)
    listener[:, HEAD.start + 1] = listener_yaw + idle(config.idle_head)
    listener[:, HEAD.start + 2] = idle(config.idle_head)
    listener[:, JAW] += 0.005 * rng.standard_normal((n, 3))
    return listener.astype(np.float32), lags


@pytest.mark.parametrize("seed", [0, 7, 123457])
def test_keeping_the_components_changes_no_generated_byte(monkeypatch, seed):
    config = SyntheticConfig(seconds=6, image_size=32)
    now = generate_session(seed, config, alternatives=2)
    calls = []

    def reference(*args):
        calls.append(1)
        return _listener_before_the_components(*args)

    with monkeypatch.context() as patch:
        patch.setattr(synthetic, "_listener", reference)
        before = generate_session(seed, config, alternatives=2)
    assert len(calls) == 3  # the session's listener and its two alternatives came from the reference
    for name in ("frames", "audio", "speaker", "listener", "alternatives"):
        assert getattr(now, name).tobytes() == getattr(before, name).tobytes(), name
    assert now.lags == before.lags
    rules = listener_rules(seed, config)  # the same listener, without the video
    assert rules.motion.tobytes() == now.listener.tobytes() and rules.lags == now.lags
    assert set(rules.components) == set(RULES)


def _rules_only(components):
    """The motion a model that learned every rule perfectly predicts: the components, no idle, blinks or noise."""
    n = len(components["nod"])
    factors = np.zeros((n, len(synthetic.LISTENER_FACTORS)))
    factors[:, 0], factors[:, 1] = components["smile"], components["brow"]
    motion = np.zeros((n, N_COEFFS))
    motion[:, EXPRESSION] = factors @ listener_basis().T
    motion[:, HEAD.start] = components["nod"]
    motion[:, HEAD.start + 1] = components["head"]
    return motion.astype(np.float32)


@pytest.fixture(scope="module")
def sessions():
    return [listener_rules(seed, SyntheticConfig(seconds=30)) for seed in range(6)]


def test_the_components_are_what_the_rules_add_to_the_listener(sessions):
    signals: dict[str, list] = {rule: [] for rule in RULES}
    for rules in sessions:
        motion = rules.motion.astype(np.float64)
        factors = np.linalg.lstsq(listener_basis(), motion[:, EXPRESSION].T, rcond=None)[0].T
        for rule, signal in (("nod", motion[:, HEAD.start]), ("head", motion[:, HEAD.start + 1]),
                             ("smile", factors[:, 0]), ("brow", factors[:, 1])):
            signals[rule].append((signal, rules.components[rule]))
    for rule, pairs in signals.items():  # what is left is idle drift and noise: small, and not the rule
        signal, part = (np.concatenate(side) for side in zip(*pairs))
        rest = signal - part
        assert np.abs(rest).max() < 0.6 * np.abs(part).max(), rule
        assert abs(np.corrcoef(rest, part)[0, 1]) < 0.3, rule
    nod = np.concatenate([rules.components["nod"] for rules in sessions])
    assert np.mean(nod != 0) < 0.3  # pulses after some pauses, silent between


def test_a_model_that_learned_every_rule_scores_one(sessions):
    components = [rules.components for rules in sessions]
    scores = score_rules([_rules_only(parts) for parts in components], components)
    for rule in RULES:
        assert scores[rule].r == pytest.approx(1.0, abs=1e-6), rule
        assert scores[rule].amplitude == pytest.approx(1.0, abs=1e-5), rule
        assert scores[rule].frames == 6 * 30 * 30
    assert 0 < scores["nod"].active_frames < scores["nod"].frames  # pulses: the amplitude on active frames
    # half the amplitude is seen as such, the correlation unchanged
    half = score_rules([0.5 * _rules_only(parts) for parts in components], components)
    assert all(half[rule].amplitude == pytest.approx(0.5, abs=1e-5) for rule in RULES)
    assert all(half[rule].r == pytest.approx(1.0, abs=1e-6) for rule in RULES)


def test_the_motion_of_another_session_scores_about_zero(sessions):
    components = [rules.components for rules in sessions]
    shifted = components[1:] + components[:1]  # each session's perfect motion against another session's rules
    for motion in ([_rules_only(parts) for parts in components], [rules.motion for rules in sessions]):
        scores = score_rules(motion, shifted)
        assert all(abs(scores[rule].r) < 0.15 for rule in RULES), {rule: scores[rule].r for rule in RULES}


def test_a_constant_prediction_has_no_r_and_the_json_says_null(sessions):
    from fad_edge.rule_diagnostic import RuleReport

    components = [rules.components for rules in sessions[:2]]
    scores = score_rules([np.zeros((len(parts["nod"]), N_COEFFS), np.float32) for parts in components], components)
    assert all(np.isnan(scores[rule].r) for rule in RULES)
    text = json.dumps(RuleReport("test", ["a", "b"], scores).to_dict(), allow_nan=False)
    assert json.loads(text)["rules"]["nod"]["r"] is None


def test_each_written_session_records_its_seed_and_older_folders_are_read_from_meta(tmp_path):
    write_synthetic_dataset(tmp_path / "d", sessions=3, seconds=2, seed=4, image_size=32, alternatives=0)
    for index in range(3):
        folder = tmp_path / "d" / f"session_{index:03d}"
        seed, config = read_session_record(folder)
        assert seed == synthetic_dataset.session_seed(4, index) and config == SyntheticConfig(seconds=2, image_size=32)
        np.testing.assert_array_equal(listener_rules(seed, config).motion,
                                      np.load(folder / layout.LISTENER))
        (folder / synthetic_dataset.SESSION_RECORD).unlink()  # as written before the record existed
        seed, config = read_session_record(folder)
        assert seed == synthetic_dataset.session_seed(4, index)
        np.testing.assert_array_equal(listener_rules(seed, config).motion, np.load(folder / layout.LISTENER))


def test_a_session_that_is_not_synthetic_is_refused(tmp_path):
    folder = layout.write_session(tmp_path / "s", np.zeros((4, 8, 8, 3), np.uint8), np.zeros(2200, np.float32),
                                  16000, np.zeros((4, 56), np.float32), source="ViCo clip 12")
    with pytest.raises(DataError, match="not a fad-edge synthetic session"):
        read_session_record(folder)
    (folder / synthetic_dataset.SESSION_RECORD).write_text('{"generator": "fad-edge synthetic", "seed": "x"}')
    with pytest.raises(DataError, match="synthetic.json: not a fad-edge synthetic session record"):
        read_session_record(folder)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("rules")
    write_synthetic_dataset(root / "data", sessions=3, seconds=3, seed=1, image_size=32, alternatives=0)
    return root / "data", tiny_checkpoint(root / "checkpoint")


def test_the_command_prints_the_table_and_writes_json(monkeypatch, capsys, dataset, tmp_path):
    data, checkpoint = dataset
    out = tmp_path / ("a_folder_for_the_rule_scores_" * 2) / "rules.json"
    code, output = run_cli(monkeypatch, capsys, "rules", checkpoint, "--data", data, "--split", "test",
                           "--out", out, "--device", "cpu")
    assert code == 0, output
    written = f"wrote {out}"
    assert output.splitlines()[-1] == written  # whole, however long
    assert all(len(line) <= 80 for line in output.splitlines() if line != written), output
    assert all(f"│ {rule}" in output for rule in RULES) and "amplitude" in output
    report = json.loads(out.read_text())
    assert report["split"] == "test" and report["settings"]["backend"] == "torch"
    assert set(report["rules"]) == set(RULES) and set(report["per_session_r"]) == set(report["sessions"])
    assert report["rules"]["head"]["frames"] == 88  # 3 s cut to whole clips
    assert report["rules"]["head"]["data_r"] > 0.9  # the recorded listener follows the head rule


def test_the_table_is_stacked_where_the_terminal_is_too_narrow_for_its_numbers(monkeypatch, capsys, dataset):
    from rich.console import Console

    from fad_edge.cli import rules_command

    data, checkpoint = dataset
    monkeypatch.setattr(rules_command, "console", Console(width=40))
    code, output = run_cli(monkeypatch, capsys, "rules", checkpoint, "--data", data, "--split", "test",
                           "--device", "cpu")
    assert code == 0, output
    assert "…" not in output and all(len(line) <= 40 for line in output.splitlines())
    assert "nod" in output.splitlines() and "  amplitude: " in output


def _assert_one_line_error(code, output, fragment):
    assert code == 2, output
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in output, output


def test_the_command_refuses_data_that_is_not_synthetic_or_was_changed(monkeypatch, capsys, dataset, tmp_path):
    import shutil

    data, checkpoint = dataset
    copy = tmp_path / "copy"
    shutil.copytree(data, copy)
    test_session = copy / json.loads((copy / layout.SPLITS).read_text())["test"][0]
    listener = np.load(test_session / layout.LISTENER)
    listener[5, HEAD.start] += 0.1
    np.save(test_session / layout.LISTENER, listener)
    code, output = run_cli(monkeypatch, capsys, "rules", checkpoint, "--data", copy, "--device", "cpu")
    _assert_one_line_error(code, output, "does not reproduce this session's listener")

    (test_session / synthetic_dataset.SESSION_RECORD).unlink()
    meta = json.loads((test_session / layout.META).read_text())
    (test_session / layout.META).write_text(json.dumps({**meta, "source": "ViCo"}))
    code, output = run_cli(monkeypatch, capsys, "rules", checkpoint, "--data", copy, "--device", "cpu")
    _assert_one_line_error(code, output, "not a fad-edge synthetic session")
