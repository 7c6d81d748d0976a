"""The networks: speaker encoders (video, audio), the ELNet denoiser, and their configuration."""
