//! `tsr-sample`: placeholder, filled in by its issue.
