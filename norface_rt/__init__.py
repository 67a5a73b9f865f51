"""norface-rt: real-time Norface facial expression analysis (AUs and emotions) per tracked face."""

__version__ = "0.1.0"
