"""stedq.training.data: synthetic STED data (pysted) with expert-like labels, and the labelled-folder loader.

The loader needs only numpy and tifffile; the simulator (`stedq.training.data.microscope`) needs the
`train` extra (pysted, scipy).
"""

from stedq.training.data.loader import (
    CheckReport,
    DatasetError,
    LabelledDataset,
    check_labelled_folder,
    load_labelled_folder,
    read_image,
)

__all__ = ["CheckReport", "DatasetError", "LabelledDataset", "check_labelled_folder",
           "load_labelled_folder", "read_image"]
