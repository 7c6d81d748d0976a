"""Cost-only replicas (random weights, real layer sizes) of the published pipelines we compare with.

`deca`: per-frame S3FD face detection, 2DFAN-4 landmarks and the DECA ResNet-50 encoder, then a
ViCo-style LSTM listener. `reactface`: ReactFace's online mode, which re-encodes the whole speaker
video and audio seen so far for every window it generates. Count their FLOPs with
`layers.count_flops`: plain `FlopCounterMode` does not count CPU scaled-dot-product attention.
"""
