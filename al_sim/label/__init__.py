"""Labelling by a real expert: the batch on disk, the labelling page, imports and the export.

``python -m al_sim.label <run dir>`` serves the page; ``--import FILE`` reads a
Label Studio export or a ``file,label`` CSV; ``--export DIR`` writes the
labelled images as an image-folder dataset. Torch-free.
"""
