//! Docker for tests: whether an engine answers, and a tiny local busybox image.
//!
//! Tests never pull: [`busybox_image`] builds `shoal-test/busybox:latest` with
//! `docker import` from a root filesystem holding only the host's static
//! `/bin/busybox` (Debian `busybox-static`) and a few applet symlinks.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, bail};

/// The image [`busybox_image`] builds.
pub const BUSYBOX_IMAGE: &str = "shoal-test/busybox:latest";
/// The static busybox binary the image is made of.
const BUSYBOX_BIN: &str = "/bin/busybox";
/// Applets linked into the image's `/bin`.
const APPLETS: &[&str] = &[
    "sh", "sleep", "echo", "cat", "nc", "httpd", "true", "false", "ls", "env", "kill",
];
/// How long `docker version` may take to answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether a Docker Engine answers through the `docker` CLI.
pub fn docker_available() -> bool {
    let Ok(mut child) = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    let start = std::time::Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if start.elapsed() < PROBE_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

/// Builds (once; idempotent) `shoal-test/busybox:latest` from the host's static busybox
/// and returns its reference. Never pulls.
pub fn busybox_image() -> anyhow::Result<String> {
    static BUILT: Mutex<bool> = Mutex::new(false);
    let mut built = BUILT
        .lock()
        .map_err(|_| anyhow::anyhow!("busybox image lock poisoned"))?;
    if *built || image_exists(BUSYBOX_IMAGE) {
        *built = true;
        return Ok(BUSYBOX_IMAGE.to_string());
    }
    import_busybox(BUSYBOX_IMAGE, &[])?;
    *built = true;
    Ok(BUSYBOX_IMAGE.to_string())
}

/// Builds (once; idempotent) `shoal-test/busybox:<version>`: the same rootfs as
/// [`busybox_image`] but a distinct image, with `SHOAL_TEST_IMAGE_VERSION=<version>`
/// in its environment — two of them are the "two locally built images" a rolling
/// update moves between. Never pulls.
pub fn busybox_image_version(version: &str) -> anyhow::Result<String> {
    static BUILT: Mutex<()> = Mutex::new(());
    let _one_at_a_time = BUILT
        .lock()
        .map_err(|_| anyhow::anyhow!("busybox image lock poisoned"))?;
    let reference = format!("shoal-test/busybox:{version}");
    if !image_exists(&reference) {
        import_busybox(
            &reference,
            &[format!("ENV SHOAL_TEST_IMAGE_VERSION={version}")],
        )?;
    }
    Ok(reference)
}

/// Builds (once; idempotent) `shoal-test/busybox:expose-<port>`: the busybox rootfs
/// with `EXPOSE <port>` (an image that declares its port, as mysql or nginx do).
/// Never pulls.
pub fn busybox_image_exposing(port: u16) -> anyhow::Result<String> {
    static BUILT: Mutex<()> = Mutex::new(());
    let _one_at_a_time = BUILT
        .lock()
        .map_err(|_| anyhow::anyhow!("busybox image lock poisoned"))?;
    let reference = format!("shoal-test/busybox:expose-{port}");
    if !image_exists(&reference) {
        import_busybox(&reference, &[format!("EXPOSE {port}")])?;
    }
    Ok(reference)
}

/// `docker import`s the busybox rootfs as `reference`, with extra `--change`s.
fn import_busybox(reference: &str, changes: &[String]) -> anyhow::Result<()> {
    let root = tempfile::tempdir().context("temp dir for the busybox rootfs")?;
    let bin = root.path().join("bin");
    std::fs::create_dir_all(&bin).context("rootfs /bin")?;
    for dir in ["tmp", "etc", "proc", "sys", "dev", "root", "www"] {
        std::fs::create_dir_all(root.path().join(dir)).with_context(|| format!("rootfs /{dir}"))?;
    }
    std::fs::copy(BUSYBOX_BIN, bin.join("busybox")).with_context(|| {
        format!("copy {BUSYBOX_BIN} (install Debian's busybox-static) into the rootfs")
    })?;
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", bin.join(applet))
            .with_context(|| format!("symlink /bin/{applet}"))?;
    }
    std::fs::write(
        root.path().join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
    )
    .context("rootfs /etc/passwd")?;
    std::fs::write(
        root.path().join("etc/group"),
        "root:x:0:\nnogroup:x:65534:\n",
    )
    .context("rootfs /etc/group")?;

    let tar = Command::new("tar")
        .arg("-C")
        .arg(root.path())
        .args(["-c", "."])
        .output()
        .context("tar the busybox rootfs")?;
    if !tar.status.success() {
        bail!("tar failed: {}", String::from_utf8_lossy(&tar.stderr));
    }
    let mut args: Vec<String> = [
        "import",
        "--change",
        r#"CMD ["sh"]"#,
        "--change",
        "ENV PATH=/bin",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for change in changes {
        args.push("--change".into());
        args.push(change.clone());
    }
    args.push("-".into());
    args.push(reference.to_string());
    let mut import = Command::new("docker")
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("run docker import")?;
    import
        .stdin
        .take()
        .context("docker import stdin")?
        .write_all(&tar.stdout)
        .context("feed the rootfs to docker import")?;
    let out = import
        .wait_with_output()
        .context("wait for docker import")?;
    if !out.status.success() {
        bail!(
            "docker import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Whether `image` is present in the local engine.
fn image_exists(image: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", image])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Removes every container carrying `label` (`key=value`), e.g. a test's leftovers.
pub fn remove_containers_labelled(label: &str) {
    let Ok(out) = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label={label}")])
        .output()
    else {
        return;
    };
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if ids.is_empty() {
        return;
    }
    let _ = Command::new("docker")
        .args(["rm", "-f"])
        .args(&ids)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
