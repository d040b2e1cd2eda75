"""stedq.study: the paper's expert user study as a small web app."""
