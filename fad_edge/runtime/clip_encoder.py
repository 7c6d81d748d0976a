"""The model side of a stream: each ready clip's mel, features and motion, and the state clips share.

A clip's condition is its own 8 frames' features plus those of `context_clips` earlier clips, kept
rather than recomputed; its mel windows reach `audio_window_frames` frames back into earlier mel.
Both start from zeros and silence at a new segment (the stream's start, or a clock jump), as at the
start of a session, since what came before the jump may be far away in time.

Frames are encoded ahead: while a clip still waits for its last frames or audio, `encode_ahead`
runs the video encoder on the frames already placed and `encode_audio_ahead` the audio encoder on
those whose audio has arrived, so when the clip's last input comes only its last frames and ELNet are
left to compute (the paper preset's 8 frames cost the video encoder 34 ms, the audio encoder 6 and
ELNet 3 on two CPU cores). A frame's features depend on its own image and mel window alone, and its
mel window on audio that no later input changes (`ClipAligner.placed_audio`), so the motion is the
same as encoding the clip at once.

With `carry_motion`, sampling starts from the previous clip's last frame instead of the mean motion
(as SDEdit does), which reduces the jump at clip boundaries. It carries across segments too: the
listener's face should not jump because the speaker's clock did.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from fad_edge.constants import CLIP_LEN, MELS_PER_FRAME, N_FFT
from fad_edge.data.audio_features import frame_windows, log_mel
from fad_edge.data.inputs import images_from_frames
from fad_edge.errors import ExportError
from fad_edge.runtime.aligner import PlacedAudio, ReadyClip

if TYPE_CHECKING:
    from fad_edge.runtime.base import ClipRunner

WARM_BATCHES = (1, 2, 4, CLIP_LEN)  # frame counts an encoder gets: frames ahead, and a whole clip at once


class ClipEncoder:
    """Turns ReadyClips into motion, in order; call it from one thread only."""

    def __init__(self, runner: ClipRunner, carry_motion: bool = False) -> None:
        self.runner, self.config, self.carry_motion = runner, runner.config, carry_motion
        self.generator = np.random.default_rng(runner.seed)
        self.previous: np.ndarray | None = None  # the last clip's motion
        self.ahead_seconds = 0.0  # model time spent ahead on the clip last returned
        self._ahead_clip = -1  # the clip whose first frames' features the _ahead fields hold
        self._ahead = np.zeros((0, self.config.video_features), np.float32)  # video features
        self._ahead_audio = np.zeros((0, self.config.audio_output_dim), np.float32)
        self._ahead_mel = np.zeros((0, self.config.n_mels), np.float32)  # the mel rows behind _ahead_audio
        self._ahead_time = 0.0
        self.reset_context()

    def reset_context(self) -> None:
        config = self.config
        self._mel_history = np.zeros((0, config.n_mels), np.float32)
        self._features = np.zeros((config.context_clips * CLIP_LEN, config.condition_dim), np.float32)

    def warm_up(self, rounds: int = 2) -> None:
        """Throwaway clips through the whole path (mel, encoders, ELNet), so that the first real clip does not
        pay for the runtime's set-up. Uses its own noise and leaves the stream's state alone.
        """
        config, runner = self.config, self.runner
        images = images_from_frames(np.zeros((CLIP_LEN, config.image_size, config.image_size, 3), np.uint8))
        condition = np.zeros((1, config.condition_frames, config.condition_dim), np.float32)
        generator = np.random.default_rng(0)
        for _ in range(rounds):
            mel = log_mel(np.zeros(N_FFT, np.float32), CLIP_LEN, config.n_mels)
            windows = frame_windows(mel, config.audio_window_frames)
            for count in WARM_BATCHES:  # the sizes a stream asks for (a GPU runner captures each bucket)
                runner.encode_video_batch(images[:count])
                runner.encode_audio_batch(windows[:count])
            runner.clips_motion(condition, runner.initial_state(1, generator), generator)

    def encoded_ahead(self, clip: int) -> int:
        """How many of clip `clip`'s first frames already have their video features."""
        return len(self._ahead) if self._ahead_clip == clip else 0

    def heard_ahead(self, clip: int) -> int:
        """How many of clip `clip`'s first frames already have their audio features."""
        return len(self._ahead_audio) if self._ahead_clip == clip else 0

    def _start_ahead(self, clip: int) -> None:
        if self._ahead_clip != clip:
            self._ahead_clip, self._ahead_time = clip, 0.0
            self._ahead = self._ahead[:0]
            self._ahead_audio, self._ahead_mel = self._ahead_audio[:0], self._ahead_mel[:0]

    def encode_ahead(self, clip: int, frames: np.ndarray) -> None:
        """Video features of clip `clip`'s next placed frames (uint8 (n, S, S, 3)), after those it has."""
        started = time.perf_counter()
        self._start_ahead(clip)
        features = self.runner.encode_video_batch(images_from_frames(frames)).astype(np.float32, copy=False)
        self._ahead = np.concatenate([self._ahead, features])
        self._ahead_time += time.perf_counter() - started

    def encode_audio_ahead(self, clip: int, placed: PlacedAudio) -> None:
        """Audio features of clip `clip`'s frames placed.start..placed.stop-1, right after those it has."""
        started = time.perf_counter()
        self._start_ahead(clip)
        if placed.start != len(self._ahead_audio):
            raise ValueError(f"audio ahead for frames from {placed.start}, but {len(self._ahead_audio)} are heard")
        history = self._mel_history if not placed.new_segment else self._mel_history[:0]
        mel = log_mel(placed.audio, placed.stop - placed.start, self.config.n_mels,
                      first_frame=clip * CLIP_LEN + placed.start, offset=placed.audio_offset)
        windows = frame_windows(mel, self.config.audio_window_frames, np.concatenate([history, self._ahead_mel]))
        features = self.runner.encode_audio_batch(windows).astype(np.float32, copy=False)
        self._ahead_audio = np.concatenate([self._ahead_audio, features])
        self._ahead_mel = np.concatenate([self._ahead_mel, mel])
        self._ahead_time += time.perf_counter() - started

    def __call__(self, clip: ReadyClip) -> np.ndarray:
        """The clip's motion (count, 56), de-normalized."""
        config, runner = self.config, self.runner
        if clip.new_segment:
            self.reset_context()
        done, heard = self.encoded_ahead(clip.index), self.heard_ahead(clip.index)
        self.ahead_seconds = self._ahead_time if done or heard else 0.0
        video, audio, mel = self._ahead[:done], self._ahead_audio[:heard], self._ahead_mel[: heard * MELS_PER_FRAME]
        self._ahead_clip = -1
        if done < CLIP_LEN:
            video = np.concatenate([video, runner.encode_video_batch(images_from_frames(clip.frames[done:]))])
        if heard < CLIP_LEN:
            rest = log_mel(clip.audio, CLIP_LEN - heard, config.n_mels, first_frame=clip.index * CLIP_LEN + heard,
                           offset=clip.audio_offset)
            windows = frame_windows(rest, config.audio_window_frames, np.concatenate([self._mel_history, mel]))
            audio = np.concatenate([audio, runner.encode_audio_batch(windows)])
            mel = np.concatenate([mel, rest])
        self._mel_history = mel[-(config.audio_window_frames * MELS_PER_FRAME):]
        features = np.concatenate([video, audio], axis=1)
        condition = np.concatenate([self._features, features])[None].astype(np.float32, copy=False)
        if config.context_clips:
            self._features = condition[0, CLIP_LEN:]
        guess = None
        if self.carry_motion and self.previous is not None:
            guess = np.repeat(((self.previous[-1] - runner.mean) / runner.std)[None, None], CLIP_LEN, axis=1)
        state = runner.initial_state(1, self.generator, guess)
        motion = runner.clips_motion(condition, state, self.generator)[0][: clip.count]
        if not np.all(np.isfinite(motion)):  # inputs are checked at the push: this is the model's own failure
            raise ExportError(f"the model's motion for clip {clip.index} is not finite; its weights may be damaged, "
                              "re-export")
        if len(motion):
            self.previous = motion
        return motion
