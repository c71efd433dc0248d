//! Installing and checking libtorch and the Python reference environment.
//!
//! tch 0.24 is built against PyTorch 2.11.0. By default the torch wheel from PyPI is installed into
//! a virtual environment kept in the tsr cache (outside the checkout, so every clone reuses it) and
//! the checkout's `.libtorch` link points at its `torch` folder, which `.cargo/config.toml` hands to
//! torch-sys as `LIBTORCH`. A user who already has a libtorch exports `LIBTORCH` (a folder with
//! `include/` and `lib/`), or `LIBTORCH_USE_PYTORCH=1` with a Python whose torch is 2.11.0.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The PyTorch release tch 0.24 is built against.
pub const TORCH_VERSION: &str = "2.11.0";

/// Python packages of the reference implementations (golden values, parity, benchmarks).
const REFERENCE_PACKAGES: &[&str] = &[
    "transformers==5.24.0",
    "trl==1.16.0",
    "gguf==0.19.0",
    "accelerate==1.15.0",
    "datasets==5.2.0",
    "safetensors==0.8.0",
    "psutil==7.2.2",
];

/// Where tsr keeps caches shared by all checkouts: `TSR_DEV_CACHE`, else `~/.cache/tsr`.
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("TSR_DEV_CACHE") {
        return Ok(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME").context("HOME is not set; set TSR_DEV_CACHE")?;
    Ok(PathBuf::from(home).join(".cache").join("tsr"))
}

/// The virtual environment that holds torch (and, on demand, the reference packages).
fn venv_dir() -> Result<PathBuf> {
    Ok(cache_dir()?.join(format!("venv-torch-{TORCH_VERSION}")))
}

/// Make sure a libtorch of the right version is available to cargo. Idempotent and quick when
/// everything is in place.
pub fn libtorch(root: &Path) -> Result<()> {
    // `.cargo/config.toml` sets LIBTORCH to `<root>/.libtorch` for every process cargo starts,
    // this one included: only a different value was chosen by the user.
    let user_libtorch = std::env::var_os("LIBTORCH")
        .map(PathBuf::from)
        .filter(|p| p != &root.join(".libtorch"));
    if let Some(dir) = user_libtorch {
        check_libtorch_dir(&dir, "the LIBTORCH environment variable")?;
        println!(
            "xtask setup: using LIBTORCH={} (torch {TORCH_VERSION})",
            dir.display()
        );
        return Ok(());
    }
    if std::env::var_os("LIBTORCH_USE_PYTORCH").is_some() {
        let python = std::env::var_os("PYTHON").unwrap_or_else(|| "python3".into());
        let (version, dir) = python_torch(Path::new(&python)).with_context(|| {
            format!(
                "LIBTORCH_USE_PYTORCH is set, but `{} -c 'import torch'` failed: install \
                 torch=={TORCH_VERSION} in that Python, or unset LIBTORCH_USE_PYTORCH to let \
                 `cargo xtask setup` install it in its own environment",
                python.to_string_lossy()
            )
        })?;
        check_version(
            &version,
            &dir,
            "the Python found on PATH (LIBTORCH_USE_PYTORCH)",
        )?;
        println!(
            "xtask setup: using the PyTorch of {}",
            python.to_string_lossy()
        );
        return Ok(());
    }

    let venv = venv_dir()?;
    let python = venv.join("bin").join("python");
    let torch_dir = match python_torch(&python) {
        Ok((version, dir)) if base_version(&version) == TORCH_VERSION => dir,
        found => {
            if let Ok((version, _)) = &found {
                println!(
                    "xtask setup: {} has torch {version}; reinstalling {TORCH_VERSION}",
                    venv.display()
                );
            }
            install_torch(&venv)?;
            let (version, dir) =
                python_torch(&python).context("torch was installed but cannot be imported")?;
            check_version(&version, &dir, "the freshly installed environment")?;
            dir
        }
    };
    check_libtorch_dir(&torch_dir, "the tsr torch environment")?;
    link(root, &torch_dir)?;
    println!(
        "xtask setup: libtorch {TORCH_VERSION} ready at {}",
        torch_dir.display()
    );
    Ok(())
}

fn install_torch(venv: &Path) -> Result<()> {
    let t0 = std::time::Instant::now();
    let cache = cache_dir()?;
    std::fs::create_dir_all(&cache)
        .with_context(|| format!("creating the cache folder {}", cache.display()))?;
    if !venv.join("bin").join("python").exists() {
        // A half-made environment from an interrupted run is removed rather than trusted.
        if venv.exists() {
            std::fs::remove_dir_all(venv)
                .with_context(|| format!("removing the incomplete {}", venv.display()))?;
        }
        run(Command::new(python3()?).args(["-m", "venv"]).arg(venv))
            .context("creating the torch virtual environment")?;
    }
    println!(
        "xtask setup: installing torch=={TORCH_VERSION} into {} (about 4.6 GB, once per machine)",
        venv.display()
    );
    run(Command::new(venv.join("bin").join("pip"))
        .args(["install", "--disable-pip-version-check", "--cache-dir"])
        .arg(cache.join("pip"))
        .arg(format!("torch=={TORCH_VERSION}")))
    .context("pip install torch")?;
    println!("xtask setup: torch installed in {:.0?}", t0.elapsed());
    Ok(())
}

/// Install the reference packages into the torch environment; returns its python.
pub fn reference(_root: &Path) -> Result<PathBuf> {
    let venv = venv_dir()?;
    let python = venv.join("bin").join("python");
    let marker = venv.join(".tsr-reference-installed");
    let wanted = REFERENCE_PACKAGES.join(" ");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(python);
    }
    if !python.exists() {
        bail!(
            "the reference packages go into the torch environment at {}, which does not exist; \
             run `cargo xtask setup` without LIBTORCH/LIBTORCH_USE_PYTORCH first",
            venv.display()
        );
    }
    println!("xtask: installing the Python references ({wanted})");
    run(Command::new(venv.join("bin").join("pip"))
        .args(["install", "--disable-pip-version-check", "--cache-dir"])
        .arg(cache_dir()?.join("pip"))
        .arg(format!("torch=={TORCH_VERSION}"))
        .args(REFERENCE_PACKAGES))
    .context("pip install of the reference packages")?;
    std::fs::write(&marker, wanted)?;
    Ok(python)
}

/// The torch version and folder a Python sees.
fn python_torch(python: &Path) -> Result<(String, PathBuf)> {
    let out = Command::new(python)
        .args([
            "-c",
            "import torch, os; print(torch.__version__); print(os.path.dirname(torch.__file__))",
        ])
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let version = lines.next().unwrap_or_default().trim().to_string();
    let dir = PathBuf::from(lines.next().unwrap_or_default().trim());
    Ok((version, dir))
}

fn base_version(v: &str) -> &str {
    v.split('+').next().unwrap_or(v)
}

fn check_version(version: &str, dir: &Path, origin: &str) -> Result<()> {
    if base_version(version) != TORCH_VERSION {
        bail!(
            "wrong PyTorch version: {origin} provides torch {version} at {}, but tsr is built with \
             tch 0.24, which needs PyTorch {TORCH_VERSION} exactly. Install torch=={TORCH_VERSION} \
             there, or unset LIBTORCH and LIBTORCH_USE_PYTORCH and run `cargo xtask setup`, which \
             installs it into its own environment.",
            dir.display()
        );
    }
    Ok(())
}

/// Check a libtorch folder: `include/`, `lib/libtorch_cpu.so` and a 2.11.0 version stamp.
fn check_libtorch_dir(dir: &Path, origin: &str) -> Result<()> {
    let fix = format!(
        "Point LIBTORCH at the `torch` folder of a PyTorch {TORCH_VERSION} installation (it holds \
         `include/` and `lib/`, e.g. .../site-packages/torch) or at an unpacked libtorch \
         {TORCH_VERSION}, or unset LIBTORCH and run `cargo xtask setup` to install one."
    );
    if !dir.is_dir() {
        bail!(
            "libtorch not found: {origin} points at {}, which is not a folder. {fix}",
            dir.display()
        );
    }
    let lib = dir.join("lib");
    let has_lib = ["libtorch_cpu.so", "libtorch.so", "libtorch_cpu.dylib"]
        .iter()
        .any(|f| lib.join(f).exists());
    if !has_lib || !dir.join("include").is_dir() {
        bail!(
            "not a libtorch folder: {origin} points at {}, which has {}; expected `include/` and \
             `lib/libtorch_cpu.so`. {fix}",
            dir.display(),
            describe(dir)
        );
    }
    // A PyTorch wheel has version.py; a libtorch zip has build-version.
    let version = std::fs::read_to_string(dir.join("build-version"))
        .ok()
        .map(|s| s.trim().to_string())
        .or_else(|| {
            std::fs::read_to_string(dir.join("version.py"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("__version__ = "))
                        .map(|v| v.trim().trim_matches('\'').trim_matches('"').to_string())
                })
        });
    match version {
        Some(v) => check_version(&v, dir, origin),
        None => {
            println!(
                "xtask setup: warning: no version stamp in {}; assuming PyTorch {TORCH_VERSION}",
                dir.display()
            );
            Ok(())
        }
    }
}

fn describe(dir: &Path) -> String {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    if names.is_empty() {
        "nothing in it".to_string()
    } else if names.len() > 4 {
        format!("{} entries ({}, ...)", names.len(), names[..4].join(", "))
    } else {
        format!("only {}", names.join(", "))
    }
}

/// Point `<root>/.libtorch` at the torch folder (replacing a stale link).
fn link(root: &Path, torch_dir: &Path) -> Result<()> {
    let l = root.join(".libtorch");
    if std::fs::read_link(&l).ok().as_deref() == Some(torch_dir) {
        return Ok(());
    }
    if l.symlink_metadata().is_ok() {
        std::fs::remove_file(&l).with_context(|| format!("removing the stale {}", l.display()))?;
    }
    std::os::unix::fs::symlink(torch_dir, &l)
        .with_context(|| format!("linking {} -> {}", l.display(), torch_dir.display()))?;
    println!("xtask setup: linked .libtorch -> {}", torch_dir.display());
    Ok(())
}

fn python3() -> Result<PathBuf> {
    for name in ["python3", "python"] {
        if Command::new(name)
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
        {
            return Ok(PathBuf::from(name));
        }
    }
    bail!("no python3 found on PATH: tsr installs PyTorch {TORCH_VERSION} from PyPI with it; install Python 3.9 or newer")
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("could not run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}
