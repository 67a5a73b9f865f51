"""The bodies of the CLI's tool commands, kept apart from the runtime's facts and types:

* :mod:`norface_rt.tools.bench` -- ``norface-rt bench`` (speed, memory and numeric error per backend);
* :mod:`norface_rt.tools.plot` -- ``norface-rt plot`` (timelines of a run; the ``plot`` extra);
* :mod:`norface_rt.tools.normalize` -- ``norface-rt normalize`` (original / normalized / target);
* :mod:`norface_rt.tools.download` -- ``norface-rt models download`` (the pinned landmarker).

Each is imported by its command only when it runs.
"""
