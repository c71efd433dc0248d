//! `tsr-loop`: placeholder, filled in by its issue.
