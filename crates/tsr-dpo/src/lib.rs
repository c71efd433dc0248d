//! `tsr-dpo`: placeholder, filled in by its issue.
