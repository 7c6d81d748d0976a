"""Every fixed number of the data contract, in one place (docs/architecture.md, "Data contract")."""

# Video: speaker frames at 30 fps.
FPS = 30
# Audio: mono 16 kHz.
SAMPLE_RATE = 16_000
INPUT_SAMPLE_RATES = (1_000, 384_000)  # audio rates accepted as input; bounds what resampling can ask for

# Clips: l = 8 frames, frame-aligned across video, audio and motion; a window of 64 frames is 8 clips.
CLIP_LEN = 8
WINDOW_FRAMES = 64

# Log-mel front end. Each video frame owns the audio of its 1/30 s and 4 mel frames of it:
# mel frame j is centred at sample round((j + 0.5) * SAMPLE_RATE / MEL_FRAMES_PER_SECOND), so mel
# frames 4i..4i+3 lie inside video frame i exactly, with no drift over any length.
MELS_PER_FRAME = 4
MEL_FRAMES_PER_SECOND = FPS * MELS_PER_FRAME  # 120 Hz: an 8.33 ms hop
N_MELS = 80
N_FFT = 512  # 32 ms analysis window (Hann), centred on each mel frame's time
MEL_FMIN = 50.0
MEL_FMAX = 8_000.0
LOG_MEL_FLOOR = 1e-5  # added before log10 so silence stays finite

# Listener / speaker motion: FLAME coefficients per frame, [expression(50), jaw(3), head rotation(3)].
N_EXPRESSION = 50
N_JAW = 3
N_HEAD = 3
N_COEFFS = N_EXPRESSION + N_JAW + N_HEAD  # 56
EXPRESSION = slice(0, N_EXPRESSION)
JAW = slice(N_EXPRESSION, N_EXPRESSION + N_JAW)
HEAD = slice(N_EXPRESSION + N_JAW, N_COEFFS)
ROTATION = slice(N_EXPRESSION, N_COEFFS)  # jaw + head, the paper's "rotation" group

# The model's default input image size (the paper's 96x96 face crops).
IMAGE_SIZE = 96
MAX_AUGMENT_SHIFT = 16  # pixels of training's shift augmentation at most; more moves a 48x48 face a third out
