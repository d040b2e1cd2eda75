"""stedq.training.data: synthetic STED data (pysted) with expert-like labels, and the labelled-folder loader."""
