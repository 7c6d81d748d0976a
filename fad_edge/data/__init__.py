"""Data: the on-disk layout, the synthetic generator, loaders, and the audio/video front ends shared by
training and the runtime."""
