"""One dataclass configures the whole model: its fields, defaults and checks (the named presets: presets.py)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from fad_edge.constants import CLIP_LEN, IMAGE_SIZE, MELS_PER_FRAME, N_COEFFS, N_MELS
from fad_edge.errors import CheckpointError

MODALITIES = ("both", "audio", "video")
ENCODER_NORMS = ("group", "batch")
DIM_WEIGHTINGS = ("uniform", "group_variance", "expression_variance")
MAX_CONTEXT_CLIPS = 64  # 17 s of speaker features before each clip; more only costs memory
MAX_ROTATION_HEAD_CHANNELS = 1024  # a typed size past this is a slip, not a model
MAX_PROSODY_CHANNELS = 256  # the same for the prosody branch, whose 2D maps are 40 bands x frames wide
# Upper bounds of the diverse sampler's noise scales (each from 0): past them a sample is noise, not a reaction.
DIVERSE_NOISE_LIMITS = {"diverse_start_noise": 1.0, "diverse_temperature": 2.0, "diverse_rotation_noise": 2.0}
# Fields that hold positive integers per stage or layer: tuples however they were given (a JSON list).
_SIZE_TUPLES = ("video_widths", "audio_widths", "blocks_per_stage", "unet_dim_mults", "condition_dilations",
                "prosody_dilations", "rotation_head_dilations")


@dataclass
class ModelConfig:
    """Sizes of the encoders and ELNet, plus the diffusion settings saved beside the weights."""

    preset: str = "paper"
    image_size: int = IMAGE_SIZE
    # ResNet-18 stage widths and blocks per stage, for the video and the audio encoder.
    video_widths: tuple[int, ...] = (64, 128, 256, 512)
    audio_widths: tuple[int, ...] = (64, 128, 256, 512)
    blocks_per_stage: tuple[int, ...] = (2, 2, 2, 2)
    stem_pool: bool = True  # ResNet's stem max-pool; off for small images so the last map stays >= 4x4
    # The encoders' norm after each convolution: "group" (GroupNorm), or "batch" (BatchNorm, which the
    # export folds into the convolutions, so INT8 graphs stay int8 from convolution to convolution).
    encoder_norm: str = "group"
    keypoints: int = 32  # spatial-softmax keypoints: 2 * keypoints pooled features
    video_features: int = 256
    audio_features: int = 256
    # Each frame's audio input: the mel frames of this many video frames, ending with its own.
    audio_window_frames: int = 8
    # 0: the per-window audio encoder (each frame's window above is its whole audio context).
    # N > 1: the frame-local audio encoder: each frame's own mel (audio_window_frames = 1) is encoded
    # once, and a causal temporal layer at ELNet's input combines the features of the N frames ending
    # with each frame, so a frame still hears the same span while no stretch of audio is encoded twice.
    audio_context_frames: int = 0
    # The prosody branch (0 channels: off). The audio encoder also passes on each frame's own log-mel
    # spectrum, and ELNet reads the condition frames' spectra with causal 2D convolutions over
    # frequency x frames (time kernel 3, these dilations), pooled over frequency. A pitch that rises
    # or falls is a slope in that plane whatever the speaker's base pitch, and the branch hears it over
    # `prosody_reach` frames back: a phrase's rising or falling end takes ~15 frames, which the
    # per-frame encoder's features do not keep (README, "Design notes": the audio cue probe).
    prosody_channels: int = 0
    prosody_dilations: tuple[int, ...] = (1, 2, 4, 8)
    # Steps of the prosody branch's pretraining before FAD's (0: none; see prosody_pretraining.py): the
    # branch alone regresses the listener's motion from the log-mel, `prosody_pretrain_windows` windows
    # of 256 frames a step, so the audible cues are heard from FAD's first step.
    prosody_pretrain_steps: int = 0
    prosody_pretrain_windows: int = 8
    # Steps of the video encoder's pretraining before FAD's (0: none; see video_pretraining.py): the
    # encoder and its speaker head regress the speaker's own coefficients from single frames,
    # `video_pretrain_frames` frames a step drawn from every training session. Skipped without the
    # speaker loss (no head to regress with) or the speaker's coefficients.
    video_pretrain_steps: int = 0
    video_pretrain_frames: int = 128
    # Whether FAD's steps leave the pretrained video encoder and its speaker head as they are (no
    # gradient; BatchNorm on its running statistics, as at inference). Its backward pass was over half
    # of a step's time on 2 cores. Has no effect where there was no video pretraining.
    freeze_pretrained_video: bool = False
    n_mels: int = N_MELS
    modalities: str = "both"
    # ELNet (temporal U-Net) sizes.
    unet_dim: int = 64
    unet_dim_mults: tuple[int, ...] = (1, 2, 4)
    kernel_size: int = 5
    groups: int = 8
    step_embed_dim: int = 64
    precondition: bool = True  # ELNet's output scaling, see ELNet (False: a plain noise-prediction U-Net)
    # A linear readout from the read condition straight to ELNet's output, beside the U-Net (see ELNet).
    condition_shortcut: bool = False
    # The rotation head (0 channels: off): causal convolutions of their own from the condition frames
    # to the jaw and head dims, added beside the U-Net (kernel 3, these dilations; see ELNet).
    rotation_head_channels: int = 0
    rotation_head_dilations: tuple[int, ...] = (1, 2, 4, 8)
    cond_dim: int = 128
    # Dilations of ELNet's convolutions over the condition frames (kernel_size wide), and whether they
    # look back only. Centered (1, 2, 4) with kernel 5 reach 14 frames back and 14 ahead; causal
    # (1, 2, 4, 8) reach 60 frames (2 s) back, which a reaction that ends a second after its cue needs.
    condition_dilations: tuple[int, ...] = (1, 2, 4)
    causal_condition: bool = False
    clip_len: int = CLIP_LEN
    context_clips: int = 0
    n_coeffs: int = N_COEFFS
    # Diffusion.
    train_steps: int = 100
    inference_steps: int = 1
    sample_start_step: int = 70
    # Scale of the start noise (1: a forward-process draw; 0: start from the mean motion).
    sample_start_noise: float = 1.0
    # Training draws this share of its steps within +-step_focus_width of sample_start_step, where
    # 1-step sampling reads the model (still epsilon-MSE; only the weighting over steps changes).
    step_focus_share: float = 0.0
    step_focus_width: int = 10
    # Weight of the encoders' auxiliary loss: predict the speaker's own coefficients (training only).
    speaker_aux_weight: float = 0.0
    # Share of the diffusion loss's gradient that reaches the video encoder (1: all; 0: only the
    # speaker loss trains it). The forward pass is the same either way.
    video_diffusion_gradient: float = 1.0
    loss_weighting: str = "uniform"  # or "inverse_alpha_bar" (see FacialActionDiffusion.training_loss)
    # Weights of the 56 dims in the loss (see ListenerModel.dim_weights): "uniform" (every normalized dim
    # alike), "group_variance" (each dim by its training variance, within expression and within
    # rotation), or "expression_variance" (expression so, the 6 rotation dims alike: a head nod,
    # a twentieth of the yaw's variance, then keeps the weight of a dim).
    loss_dim_weighting: str = "uniform"
    # Multiplies the 6 rotation dims' loss weights after the weighting above: the groups' shares of the
    # loss (50 expression dims to 6) decide what a short training run learns first.
    rotation_loss_weight: float = 1.0
    clip_sample: float = 6.0
    # The "diverse" sampler (fad_edge.sampling): a draw from the reaction distribution, not the mean.
    # `fad-edge tune-sampler` calibrates these on validation data and writes them into a copy of the checkpoint.
    diverse_start_step: int = 70
    diverse_start_noise: float = 1.0
    diverse_steps: int = 1
    diverse_temperature: float = 1.0  # scale of the per-step posterior noise (1: DDPM)
    diverse_rotation_noise: float = 1.0  # the jaw and head dims' posterior noise relative to the others'

    def __post_init__(self) -> None:
        for name in _SIZE_TUPLES:
            setattr(self, name, tuple(getattr(self, name)))
        if self.modalities not in MODALITIES:
            raise ValueError(f"modalities must be one of {MODALITIES}, got {self.modalities!r}")
        if self.encoder_norm not in ENCODER_NORMS:
            raise ValueError(f"encoder_norm must be one of {ENCODER_NORMS}, got {self.encoder_norm!r}")
        if self.loss_weighting not in ("uniform", "inverse_alpha_bar"):
            raise ValueError(f"loss_weighting must be uniform or inverse_alpha_bar, got {self.loss_weighting!r}")
        if self.loss_dim_weighting not in DIM_WEIGHTINGS:
            raise ValueError(f"loss_dim_weighting must be one of {DIM_WEIGHTINGS}, got {self.loss_dim_weighting!r}")
        if self.loss_weighting == "inverse_alpha_bar" and not self.precondition:
            raise ValueError("inverse_alpha_bar weighting needs the preconditioned ELNet (its epsilon error "
                             "then carries a sqrt(alpha_bar) factor; without it the weights reach 4e6)")
        self._check_ranges()

    def _check_ranges(self) -> None:
        """Numbers read from a file or typed by a user: refuse what no model could be built or sampled with."""
        positive = ("image_size", "keypoints", "video_features", "audio_features", "audio_window_frames", "n_mels",
                    "unet_dim", "kernel_size", "groups", "step_embed_dim", "cond_dim", "clip_len", "n_coeffs",
                    "train_steps", "inference_steps")
        for name in positive:
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in _SIZE_TUPLES:
            values = getattr(self, name)
            if not values or not all(_is_int(v) and v >= 1 for v in values):
                raise ValueError(f"{name} must be positive integers, got {values!r}")
        for name in ("causal_condition", "condition_shortcut", "precondition", "freeze_pretrained_video"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if not _is_int(self.context_clips) or not 0 <= self.context_clips <= MAX_CONTEXT_CLIPS:
            raise ValueError(f"context_clips must be in 0..{MAX_CONTEXT_CLIPS}, got {self.context_clips!r}")
        self._check_channels("prosody_channels", MAX_PROSODY_CHANNELS)
        if not _is_int(self.prosody_pretrain_steps) or self.prosody_pretrain_steps < 0:
            raise ValueError(f"prosody_pretrain_steps must be 0 or more, got {self.prosody_pretrain_steps!r}")
        if self.prosody_pretrain_steps and not self.prosody_channels:
            raise ValueError("prosody_pretrain_steps needs the prosody branch (prosody_channels > 0)")
        if not _is_int(self.prosody_pretrain_windows) or self.prosody_pretrain_windows < 1:
            raise ValueError(f"prosody_pretrain_windows must be 1 or more, got {self.prosody_pretrain_windows!r}")
        if not _is_int(self.video_pretrain_steps) or self.video_pretrain_steps < 0:
            raise ValueError(f"video_pretrain_steps must be 0 or more, got {self.video_pretrain_steps!r}")
        if not _is_int(self.video_pretrain_frames) or self.video_pretrain_frames < 1:
            raise ValueError(f"video_pretrain_frames must be 1 or more, got {self.video_pretrain_frames!r}")
        self._check_channels("rotation_head_channels", MAX_ROTATION_HEAD_CHANNELS)
        if not _is_int(self.audio_context_frames) or self.audio_context_frames < 0:
            raise ValueError(f"audio_context_frames must be a non-negative integer, got {self.audio_context_frames!r}")
        if self.audio_context_frames > 1 and self.context_clips * self.clip_len < self.audio_context_frames - 1:
            raise ValueError(f"audio_context_frames={self.audio_context_frames} needs context_clips >= "
                             f"{-(-(self.audio_context_frames - 1) // self.clip_len)}: a clip's first frame "
                             "hears the frames before it only through the context clips")
        if self.inference_steps > self.train_steps:
            raise ValueError(f"inference_steps must be in 1..train_steps ({self.train_steps}), "
                             f"got {self.inference_steps}")
        if not _is_int(self.sample_start_step) or not 0 <= self.sample_start_step < self.train_steps:
            raise ValueError(f"sample_start_step must be in 0..{self.train_steps - 1}, got {self.sample_start_step!r}")
        if not _is_int(self.step_focus_width) or self.step_focus_width < 0:
            raise ValueError(f"step_focus_width must be a non-negative integer, got {self.step_focus_width!r}")
        ranges = {"sample_start_noise": (0.0, 1.0), "step_focus_share": (0.0, 1.0),
                  "speaker_aux_weight": (0.0, math.inf), "clip_sample": (0.0, math.inf),
                  "rotation_loss_weight": (0.0, math.inf), "video_diffusion_gradient": (0.0, 1.0)}
        for name, (low, high) in ranges.items():
            value = getattr(self, name)
            if not _is_number(value) or not low <= value <= high or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number in [{low:g}, {high:g}], got {value!r}")
        if self.clip_sample == 0:
            raise ValueError("clip_sample must be positive, got 0")
        self._check_diverse_sampler()

    def _check_diverse_sampler(self) -> None:
        if not _is_int(self.diverse_start_step) or not 0 <= self.diverse_start_step < self.train_steps:
            raise ValueError(f"diverse_start_step must be in 0..{self.train_steps - 1}, "
                             f"got {self.diverse_start_step!r}")
        if not _is_int(self.diverse_steps) or not 1 <= self.diverse_steps <= self.train_steps:
            raise ValueError(f"diverse_steps must be in 1..{self.train_steps}, got {self.diverse_steps!r}")
        for name, high in DIVERSE_NOISE_LIMITS.items():
            value = getattr(self, name)
            if not _is_number(value) or not math.isfinite(value) or not 0.0 <= value <= high:
                raise ValueError(f"{name} must be a finite number in [0, {high:g}], got {value!r}")

    @property
    def audio_window(self) -> int:
        """Mel frames in one frame's audio input."""
        return self.audio_window_frames * MELS_PER_FRAME

    @property
    def audio_encoder(self) -> str:
        """Which audio encoder: "frame" (frame-local + causal temporal layer) or "window" (per-frame windows)."""
        return "frame" if self.audio_context_frames > 1 else "window"

    @property
    def audio_span_frames(self) -> int:
        """Video frames of audio each frame's feature hears, its own included."""
        return max(self.audio_window_frames, self.audio_window_frames + self.audio_context_frames - 1)

    @property
    def audio_output_dim(self) -> int:
        """Width of the audio encoder's output: its features, then the frame's spectrum if the prosody branch is on."""
        return self.audio_features + (self.n_mels if self.prosody_channels else 0)

    @property
    def prosody_reach(self) -> int:
        """Frames back the prosody branch hears, each frame's own aside (0: no branch)."""
        return 2 * sum(self.prosody_dilations) if self.prosody_channels else 0

    @property
    def condition_dim(self) -> int:
        """Per-frame condition width: the video and the audio encoder's outputs concatenated."""
        return self.video_features + self.audio_output_dim

    @property
    def condition_reach(self) -> tuple[int, int]:
        """Condition frames ELNet's condition convolutions see (before, after) each frame; audio span aside."""
        if self.causal_condition:
            return (self.kernel_size - 1) * sum(self.condition_dilations), 0
        radius = (self.kernel_size // 2) * sum(self.condition_dilations)
        return radius, radius

    @property
    def step_focus_range(self) -> tuple[int, int]:
        """The training steps (inclusive) that `step_focus_share` of each batch draws from."""
        return (max(0, self.sample_start_step - self.step_focus_width),
                min(self.train_steps - 1, self.sample_start_step + self.step_focus_width))

    @property
    def condition_frames(self) -> int:
        """Frames of speaker features one clip sees: its own plus `context_clips` preceding clips."""
        return (self.context_clips + 1) * self.clip_len

    def _check_channels(self, name: str, most: int) -> None:
        """An optional module's width: 0 (none) or a multiple of the GroupNorm groups, up to `most`."""
        channels = getattr(self, name)
        if not _is_int(channels) or not 0 <= channels <= most or channels % self.groups:
            raise ValueError(f"{name} must be 0 or a multiple of groups ({self.groups}) up to {most}, "
                             f"got {channels!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise CheckpointError(
                f"model config has unknown fields {sorted(unknown)}: not a fad-edge config of this version"
            )
        return cls(**data)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
