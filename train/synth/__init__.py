"""Synthetic paired-face data engine: ICT-FaceKit heads with real-skin textures, rendered with a
headless OpenGL rasteriser, each expression shown on a random identity and on the fixed target
identity, labelled with FACS AUs and emotions by a written mapping (docs/synthetic.md,
docs/au_mapping.md). Run ``python -m train.synth --help``.
"""
