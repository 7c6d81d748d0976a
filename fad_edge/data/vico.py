"""ViCo's own layouts, for users who have them: its clips written in our layout (`fad-edge convert-vico`).

ViCo (Zhou et al. 2022), with FLAME re-extractions, in either of two layouts:
    - ViCo's release (the challenge's `listening_head` folder; the ViCo project's conversion script
      turns its full set into the same): `ROOT/<split>.csv` with columns `video_id, uuid, speaker_id,
      listener_id`, `ROOT/videos/<uuid>.speaker.mp4` and `<uuid>.listener.mp4` (30 fps; only the
      speaker's is read), `ROOT/audios/<uuid>.wav`; beside them the re-extracted FLAME parameters
      `ROOT/listener_flame/<uuid>.npy` and, optionally, `ROOT/speaker_flame/<uuid>.npy`. The CSV's
      `speaker_id` is recorded as the session's speaker and is what `--val-fraction` splits by.
    - per-split folders: `ROOT/<split>/speaker/<id>.mp4`, `ROOT/<split>/audio/<id>.wav`,
      `ROOT/<split>/listener_flame/<id>.npy` and optionally `ROOT/<split>/speaker_flame/<id>.npy`.
    Each FLAME file is (T, 56) = [expression 50, global head pose 3, jaw 3]: DECA's `exp` then its
    `pose`, as DECA orders them; it is reordered here to ours. ViCo ships no FLAME parameters: its
    released coefficients are BFM (64 expression + 3 angles + 3 translation per frame), a different
    face model, and such files are refused.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from fad_edge.atomic import atomic_write_bytes
from fad_edge.constants import FPS, N_COEFFS, SAMPLE_RATE
from fad_edge.data import layout
from fad_edge.data.adapters import load_npy, pose_first_to_ours
from fad_edge.data.audio_features import resample_audio
from fad_edge.data.media import read_audio, read_video
from fad_edge.errors import DataError

LONG_AUDIO_SECONDS = 2.0  # audio longer than the video by more than this is noted: perhaps another clip's
BFM_WIDTHS = {70, 73, 80, 257, 258}  # BFM exp+angle+trans (+ identity/texture/light in some dumps)


def read_flame(path: Path, frames: int | None = None) -> np.ndarray:
    """A ViCo FLAME re-extraction (T, 56) [exp, global pose, jaw] -> ours; BFM files are refused."""
    array = load_npy(path)
    if array.ndim != 2:
        raise DataError(f"{path}: expected (T, 56) per-frame FLAME parameters, got shape {array.shape}")
    if array.shape[1] in BFM_WIDTHS:
        raise DataError(f"{path}: {array.shape[1]} values per frame look like BFM coefficients (64 expression + "
                        "3 angles + 3 translation), not FLAME; re-extract FLAME parameters (e.g. with DECA) first")
    if array.shape[1] != N_COEFFS:
        raise DataError(f"{path}: {array.shape[1]} values per frame; "
                        "a FLAME re-extraction has 56 (expression 50 + pose 6)")
    if frames is not None and abs(len(array) - frames) > 1:  # one either way: decoders and extractors differ
        raise DataError(f"{path}: {len(array)} frames of parameters but the video has {frames}")
    layout.check_coefficient_values(path, array)
    return pose_first_to_ours(array.astype(np.float32), head_first=True)


# ViCo's two layouts, as `convert-vico` reports the one it found.
RELEASE_LAYOUT = "ViCo's release layout (<split>.csv, videos/, audios/, listener_flame/)"
FOLDER_LAYOUT = "per-split folders (<split>/speaker/, audio/, listener_flame/)"
CSV_COLUMNS = ("uuid", "speaker_id")  # what we read of ViCo's video_id, uuid, speaker_id, listener_id


@dataclass(frozen=True)
class ViCoClip:
    """One ViCo clip's files; `listed_in` is the CSV or folder that lists it, named when a file is missing."""

    split: str
    clip_id: str
    video: Path
    audio: Path
    listener: Path
    speaker_flame: Path  # optional: read where it exists
    listed_in: Path
    speaker_id: str | None = None  # the release layout's speaker_id; None in per-split folders

    @property
    def session(self) -> str:
        """The session folder name in our layout."""
        return f"{self.split}_{self.clip_id}"


@dataclass(frozen=True)
class ViCoClips:
    """Every clip found under a ViCo root, by split, and which layout they were found in."""

    root: Path
    layout: str
    splits: dict[str, list[ViCoClip]]
    source: str  # where the splits are listed, for messages: "train.csv, test.csv" or "train/, test/"


@dataclass(frozen=True)
class ValSplit:
    """Carve val out of train: about `fraction` of train's clips, whole speakers, chosen by `seed`."""

    fraction: float
    seed: int


@dataclass(frozen=True)
class ViCoConversion:
    """What `convert_vico` wrote: the layout it read, and the session names of each split."""

    layout: str
    splits: dict[str, list[str]]
    notes: list[str] = field(default_factory=list)  # per clip: audio channels that cancelled, audio far too long


def find_vico_clips(root: Path) -> ViCoClips:
    """The clips of a ViCo root in either layout: the release's when it has split CSVs or videos/."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder; give --src the ViCo folder holding <split>.csv and videos/")
    if any(root.glob("*.csv")) or (root / "videos").is_dir():
        return _release_clips(root)
    return _folder_clips(root)


def _check_split_names(root: Path, found: list[str], form: str) -> None:
    """Refuse splits named other than train/val/test: they would be dropped, and a `valid` set lost, silently."""
    unknown = [name for name in found if name not in layout.SPLIT_NAMES]
    if unknown:
        listed = ", ".join(form.format(name) for name in found)
        expected = ", ".join(form.format(name) for name in layout.SPLIT_NAMES)
        raise DataError(f"{root}: found {listed}; expected split names {expected} (rename "
                        f"{', '.join(form.format(name) for name in unknown)}, or move it away)")


def _release_clips(root: Path) -> ViCoClips:
    """The release layout: one CSV per split listing uuids, files by uuid in flat folders."""
    tables = sorted(root.glob("*.csv"))
    if not tables:
        raise DataError(f"{root}: has videos/ but no <split>.csv; ViCo lists each split's clips in train.csv, "
                        "val.csv and test.csv beside videos/")
    _check_split_names(root, [table.stem for table in tables], "{}.csv")
    splits = {table.stem: [_release_clip(root, table, uuid, speaker) for uuid, speaker in _read_split_csv(table)]
              for table in tables}
    _check_unique_clips(splits)
    return ViCoClips(root, RELEASE_LAYOUT, splits, ", ".join(table.name for table in tables))


def _read_split_csv(path: Path) -> list[tuple[str, str]]:
    """(uuid, speaker_id) of every row of a ViCo split CSV; refused when empty or missing a column."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            # Header names stripped: "video_id, uuid, speaker_id" (a space after each comma) is common.
            rows = [{str(key).strip(): value for key, value in row.items()} for row in csv.DictReader(handle)]
            columns = rows[0].keys() if rows else []
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"{path}: not a readable CSV file ({error})") from None
    if not rows:
        raise DataError(f"{path}: lists no clips; a ViCo split CSV has a header (video_id, uuid, speaker_id, "
                        "listener_id) and one row per clip")
    missing = [column for column in CSV_COLUMNS if column not in columns]
    if missing:
        raise DataError(f"{path}: no column {', '.join(missing)} (found {', '.join(map(str, columns))}); "
                        "expected ViCo's video_id, uuid, speaker_id, listener_id")
    clips = []
    for line, row in enumerate(rows, start=2):
        uuid, speaker = (str(row[column] or "").strip() for column in CSV_COLUMNS)
        if not uuid or not speaker or Path(uuid).name != uuid or uuid in (".", ".."):
            raise DataError(f"{path}: line {line} has uuid {uuid!r} and speaker_id {speaker!r}; each row needs a "
                            "clip's file name stem as uuid and its speaker's id")
        clips.append((uuid, speaker))
    return clips


def _release_clip(root: Path, table: Path, uuid: str, speaker_id: str) -> ViCoClip:
    """A release-layout clip: the speaker's video (never the listener's), the audio and the FLAME files by uuid."""
    return ViCoClip(table.stem, uuid, root / "videos" / f"{uuid}.speaker.mp4", root / "audios" / f"{uuid}.wav",
                    root / "listener_flame" / f"{uuid}.npy", root / "speaker_flame" / f"{uuid}.npy", table, speaker_id)


def _check_unique_clips(splits: dict[str, list[ViCoClip]]) -> None:
    """Refuse a uuid listed twice: its clip would be trained on and scored, or counted twice."""
    seen: dict[str, Path] = {}
    for clips in splits.values():
        for clip in clips:
            if clip.clip_id in seen:
                where = "twice" if seen[clip.clip_id] == clip.listed_in else f"also in {seen[clip.clip_id].name}"
                raise DataError(f"{clip.listed_in}: lists clip {clip.clip_id} {where}; each clip belongs to one "
                                "split, once")
            seen[clip.clip_id] = clip.listed_in


def _folder_clips(root: Path) -> ViCoClips:
    """Per-split folders, each with speaker/, audio/ and listener_flame/ by clip id."""
    folders = sorted(path.name for path in root.iterdir() if path.is_dir() and not path.name.startswith("."))
    if not folders:
        raise DataError(f"{root}: no ViCo clips found; expected ViCo's release layout (<split>.csv, "
                        "videos/<uuid>.speaker.mp4, audios/<uuid>.wav, listener_flame/<uuid>.npy) or per-split "
                        "folders (<split>/speaker/<id>.mp4, audio/<id>.wav, listener_flame/<id>.npy)")
    _check_split_names(root, folders, "{}/")
    splits = {split: _split_folder_clips(root / split) for split in folders}
    return ViCoClips(root, FOLDER_LAYOUT, splits, ", ".join(f"{split}/" for split in folders))


def _split_folder_clips(folder: Path) -> list[ViCoClip]:
    """The clips of one split folder, by its speaker/*.mp4; refused when there are none."""
    speaker = folder / "speaker"
    videos = sorted(path for path in speaker.iterdir() if path.suffix.lower() == ".mp4") if speaker.is_dir() else []
    if not videos:
        found = sorted(path.name + "/" for path in folder.iterdir() if path.is_dir())
        raise DataError(f"{folder}: no clips in speaker/*.mp4 (found {', '.join(found) or 'no folders'}); "
                        "expected speaker/<id>.mp4, audio/<id>.wav and listener_flame/<id>.npy")
    return [ViCoClip(folder.name, video.stem, video, folder / "audio" / f"{video.stem}.wav",
                     folder / "listener_flame" / f"{video.stem}.npy", folder / "speaker_flame" / f"{video.stem}.npy",
                     folder / "speaker") for video in videos]


def carve_val_split(clips: ViCoClips, val: ValSplit) -> ViCoClips:
    """Move whole speakers from train to val, about `val.fraction` of train's clips, the same for the same seed.

    By speaker, so that no one is both trained on and validated on; speakers that test also has stay
    in train, so the carved val shares no one with test either.
    """
    if "val" in clips.splits:
        raise DataError(f"{clips.root}: has a val split already ({clips.source}); drop --val-fraction")
    train = clips.splits.get("train", [])
    if any(clip.speaker_id is None for clip in train):
        raise DataError(f"{clips.root}: --val-fraction splits by speaker, which only ViCo's release CSVs give "
                        "(speaker_id); add a val/ folder instead")
    clips_of = Counter(str(clip.speaker_id) for clip in train)
    speakers = sorted(clips_of)
    in_test = {clip.speaker_id for clip in clips.splits.get("test", [])}
    candidates = [speaker for speaker in speakers if speaker not in in_test]
    taken: set[str] = set()
    for i in np.random.default_rng(val.seed).permutation(len(candidates)):
        if sum(clips_of[speaker] for speaker in taken) >= val.fraction * len(train):
            break
        taken.add(candidates[i])
    if taken == set(speakers):
        raise DataError(f"{clips.root}: --val-fraction {val.fraction:g} would move all {len(speakers)} of train's "
                        "speakers to val and leave none to train on; give a smaller fraction, or add a val.csv")
    if not taken:
        raise DataError(f"{clips.root}: train has {len(speakers)} speakers, {len(candidates)} of them not in "
                        f"test: too few to carve a val split of --val-fraction {val.fraction:g} by speaker and "
                        "keep one in train; add a val.csv")
    moved = [replace(clip, split="val") for clip in train if clip.speaker_id in taken]
    kept = [clip for clip in train if clip.speaker_id not in taken]
    return replace(clips, splits={**clips.splits, "train": kept, "val": moved})


def _check_splits_complete(clips: ViCoClips) -> None:
    """Refuse a dataset missing a split: training needs train and val, evaluation test; none may be written empty."""
    for split in layout.SPLIT_NAMES:
        if clips.splits.get(split):
            continue
        release = clips.layout == RELEASE_LAYOUT
        where = f"{split}.csv" if release else f"{split}/"
        how = (f"give --val-fraction (e.g. 0.1) to carve val out of train by speaker, or add {where}"
               if split == "val" and release else f"add {where}")
        raise DataError(f"{clips.root}: no {split} split (found {clips.source}); expected train, val and test: {how}")


def _check_clip_files(clips: ViCoClips) -> None:
    """Refuse a listed clip whose video, audio or listener FLAME file is missing, before any is decoded."""
    for split_clips in clips.splits.values():
        for clip in split_clips:
            for path in (clip.video, clip.audio, clip.listener):
                if not path.is_file():
                    raise DataError(f"{path}: file not found, for clip {clip.clip_id} listed in {clip.listed_in}")
    every = [clip for split_clips in clips.splits.values() for clip in split_clips]
    lacking = [clip for clip in every if not clip.speaker_flame.is_file()]
    if 0 < len(lacking) < len(every):  # what reads them (NN motion, Mirror) needs every session's, or none
        raise DataError(f"{lacking[0].speaker_flame}: file not found, though {len(every) - len(lacking)} of the "
                        f"{len(every)} clips have their speaker's FLAME file; give every clip's, or none")


def convert_vico(root: Path, out: Path, overwrite: bool = False, val: ValSplit | None = None) -> ViCoConversion:
    """Write ViCo (FLAME re-extraction) sessions in our layout, with splits.json; `val` carves val out of train.

    Every clip's files are checked to exist before any is decoded, and each clip as training will read
    it. The dataset is built beside `out` and swapped in once whole (`layout.staged_dataset`), so a clip
    refused halfway leaves an earlier dataset there as it was.
    """
    root, out = Path(root), Path(out)
    if out.resolve() == root.resolve() or out.resolve() in root.resolve().parents:
        raise DataError(f"{root}: --src is inside --out {out}, which the conversion replaces; give another --out")
    clips = find_vico_clips(root)
    if val is not None:
        clips = carve_val_split(clips, val)
    _check_splits_complete(clips)
    _check_clip_files(clips)
    notes = _shared_speaker_notes(clips)
    with layout.staged_dataset(out, overwrite) as staging:
        splits = {split: [_convert_clip(clip, staging / clip.session, notes) for clip in clips.splits[split]]
                  for split in layout.SPLIT_NAMES}
        layout.write_splits(staging, splits)
    return ViCoConversion(clips.layout, splits, notes)


def _shared_speaker_notes(clips: ViCoClips) -> list[str]:
    """A note where a speaker is in train and in val or test (ViCo's own split allows it): figures on those
    sessions are not of new speakers."""
    speakers = {split: {clip.speaker_id for clip in split_clips if clip.speaker_id is not None}
                for split, split_clips in clips.splits.items()}
    notes = []
    for split in ("val", "test"):
        if shared := sorted(speakers.get("train", set()) & speakers.get(split, set())):
            notes.append(f"{len(shared)} speaker(s) of {split} are also in train (e.g. {shared[0]}): its figures "
                         "on their clips are not of new speakers")
    return notes


def _convert_clip(clip: ViCoClip, session: Path, notes: list[str]) -> str:
    """Check one ViCo clip and write it as the session folder `session`; its name. What a user should know
    of it (channels that cancelled, audio much longer than the video) is appended to `notes`."""
    frames, fps = read_video(clip.video)
    if abs(fps - FPS) > 0.5:
        raise DataError(f"{clip.video}: {fps:.2f} fps; ViCo clips are {FPS} fps")
    heard: list[str] = []
    samples, rate = read_audio(clip.audio, heard)
    notes.extend(f"{clip.audio.name}: {note}" for note in heard)
    samples = resample_audio(samples, rate, SAMPLE_RATE)  # our layout is 16 kHz
    listener = read_flame(clip.listener, len(frames))
    speaker = read_flame(clip.speaker_flame, len(frames)) if clip.speaker_flame.exists() else None
    n = min([len(frames), len(listener)] + ([len(speaker)] if speaker is not None else []))  # one frame apart at most
    layout.check_audio_covers(clip.audio, len(samples) / SAMPLE_RATE, n)
    if len(samples) / SAMPLE_RATE > n / FPS + LONG_AUDIO_SECONDS:
        notes.append(f"{clip.audio.name}: {len(samples) / SAMPLE_RATE:.1f} s of audio for {n / FPS:.1f} s of video; "
                     "check that it is the clip's own")
    layout.write_session(session, frames[:n], samples, SAMPLE_RATE, listener[:n],
                         None if speaker is None else speaker[:n], source="ViCo (FLAME re-extraction)")
    if clip.speaker_id is not None:
        _record_speaker(session, clip.speaker_id)
    return session.name


def _record_speaker(session: Path, speaker_id: str) -> None:
    """Add ViCo's speaker_id to the session's meta.json, so that the same person is known across clips."""
    meta = json.loads((session / layout.META).read_text())
    atomic_write_bytes(session / layout.META, json.dumps({**meta, "speaker": speaker_id}, indent=2).encode())
