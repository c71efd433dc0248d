//! `tsr-curate`: placeholder, filled in by its issue.
