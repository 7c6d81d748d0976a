"""fad-edge: listener facial motion by Facial Action Diffusion (FAD/ELNet), built for the edge."""

__version__ = "0.1.0"
