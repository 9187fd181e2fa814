//! `atelier backup` and `atelier restore`: the embedded platform (SQLite files and
//! local objects under `DATA_DIR`) into one archive and back, while it serves.
//!
//! The archive holds every service's database, every object a copied image row
//! names, and the keys the platform needs to read them: the JWT signing keys, the
//! URL-signing key (shared links and signed URLs stay valid), the local-objects
//! encryption key when one is configured, and the generated service CA and
//! certificates. It is a secret: written 0600, to be kept where only operators
//! reach. See [`snapshot`] for how it stays consistent while requests run, and
//! [`archive`] for its layout. A platform on PostgreSQL and S3 is backed up with
//! the database's and the bucket's own means (k8s/RUNBOOK-backup.md).

mod archive;
mod snapshot;

use std::{
    io::Read,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use anyhow::{Context, bail, ensure};
use atelier_common::config::{self, Platform};
use atelier_storage::LocalStore;
use time::format_description::well_known::Rfc3339;

use archive::{Counts, Manifest, Writer};

/// What the archive says about itself, for the operator.
const SECRETS_NOTICE: &str = "The archive holds secrets (JWT signing keys, the URL-signing key, the service CA's key, \
the storage encryption key when one is set) besides every user's data: it is written 0600; \
keep it where only operators can read it.";

/// `atelier backup`: writes an archive of the platform `DATA_DIR` holds.
pub async fn backup(output: Option<PathBuf>) -> anyhow::Result<()> {
    let platform = Platform::from_env()?;
    if platform.database_url.is_some() {
        bail!(
            "DATABASE_URL is set: back PostgreSQL up with its own tools (base backups and WAL archiving; \
             see k8s/RUNBOOK-backup.md). `atelier backup` copies the embedded SQLite databases"
        );
    }
    if config::var_opt::<String>("S3_BUCKET")?.is_some() {
        bail!(
            "S3_BUCKET is set: objects in S3 are kept by the bucket's versioning or a backup bucket \
             (see k8s/RUNBOOK-backup.md). `atelier backup` copies the local objects under DATA_DIR"
        );
    }
    let data_dir = &platform.data_dir;
    let databases = snapshot::database_files(data_dir)?;
    ensure!(
        !databases.is_empty(),
        "{} holds no database: nothing to back up (is DATA_DIR right?)",
        data_dir.display()
    );
    let now = time::OffsetDateTime::now_utc();
    let output = output.unwrap_or_else(|| {
        let stamp = now
            .format(time::macros::format_description!(
                "[year][month][day]T[hour][minute][second]Z"
            ))
            .unwrap_or_default();
        PathBuf::from(format!("atelier-backup-{stamp}.tar.gz"))
    });
    ensure!(
        !output.exists(),
        "{} exists already: name another file",
        output.display()
    );
    let parent = match output.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    // The databases' copies wait beside the archive (same filesystem, 0700).
    let staging = tempfile::Builder::new()
        .prefix(".atelier-backup-")
        .tempdir_in(&parent)
        .with_context(|| format!("making a directory in {}", parent.display()))?;

    // 1. Databases, referrers first (see `snapshot`).
    for name in &databases {
        snapshot::copy_database(
            &data_dir.join(name),
            &snapshot::staged(staging.path(), name),
        )
        .await?;
    }
    // Drills and tests act between the two steps (delete an image, finish a job)
    // to see the objects step keep the copy whole.
    if let Some(ms) = config::var_opt::<u64>("BACKUP_PAUSE_AFTER_DATABASES_MS")? {
        println!("databases copied; pausing {ms} ms before the objects");
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    let mut writer = Writer::create(&output, now.unix_timestamp().max(0) as u64)?;
    let written = write(&platform, &databases, staging.path(), &mut writer).await;
    let counts = match written {
        Ok(counts) => counts,
        Err(err) => {
            writer.abandon();
            return Err(err);
        }
    };
    let summary = counts.clone();
    let manifest = Manifest {
        format: archive::FORMAT.into(),
        version: archive::VERSION,
        atelier_version: env!("CARGO_PKG_VERSION").into(),
        created_at: now.format(&Rfc3339)?,
        contains_secrets: true,
        counts,
        files: Vec::new(),
    };
    let files = writer.files().len() + 1;
    let size = writer.finish(manifest)?;
    println!(
        "backup written to {} ({files} files, {:.1} MiB)",
        output.display(),
        size as f64 / (1024.0 * 1024.0)
    );
    print_counts(&summary);
    println!("{SECRETS_NOTICE}");
    Ok(())
}

/// Objects, keys, certificates, then the databases; the counts for the manifest.
async fn write(
    platform: &Platform,
    databases: &[String],
    staging: &Path,
    writer: &mut Writer,
) -> anyhow::Result<Counts> {
    let data_dir = &platform.data_dir;
    let mut counts = Counts::default();
    // 2. The objects the copied image rows name (the image service keeps them under
    //    DATA_DIR/objects).
    let objects_root = data_dir.join("objects");
    if databases.iter().any(|name| name == "image.db") && objects_root.is_dir() {
        let store = LocalStore::new(objects_root)
            .map_err(|err| anyhow::anyhow!("opening the local objects: {err}"))?;
        let processing = databases
            .iter()
            .any(|name| name == "processing.db")
            .then(|| snapshot::staged(staging, "processing.db"));
        let (objects, left_out) = snapshot::copy_objects(
            &store,
            &snapshot::staged(staging, "image.db"),
            processing.as_deref(),
            writer,
        )
        .await?;
        counts.objects = objects;
        counts.images_left_out = left_out;
    }

    // 3. Keys and certificates.
    let jwt_keys: PathBuf = config::var("JWT_KEYS_DIR", data_dir.join("keys"))?;
    for (path, relative) in files_under(&jwt_keys)? {
        writer.add_file(&format!("{}{relative}", archive::JWT_KEYS), &path)?;
    }
    if config::var_opt::<String>("URL_SIGNING_KEY")?.is_some() {
        println!(
            "URL_SIGNING_KEY comes from the environment: it is not in the archive; keep it with it"
        );
    } else if data_dir.join("url-signing.key").is_file() {
        writer.add_file(archive::URL_SIGNING_KEY, &data_dir.join("url-signing.key"))?;
    }
    if let Some(key) = config::var_opt::<PathBuf>("STORAGE_ENCRYPTION_KEY_FILE")? {
        writer
            .add_file(archive::STORAGE_KEY, &key)
            .context("STORAGE_ENCRYPTION_KEY_FILE")?;
    }
    if platform.tls.generate {
        for (path, relative) in files_under(&platform.tls.dir)? {
            writer.add_file(&format!("{}{relative}", archive::TLS), &path)?;
        }
    }

    // 4. The databases' copies, as the objects step left them.
    for name in databases {
        let path = snapshot::staged(staging, name);
        counts
            .databases
            .insert(name.clone(), snapshot::table_counts(&path).await?);
        writer.add_file(&format!("{}{name}", archive::DATABASES), &path)?;
    }
    Ok(counts)
}

/// Regular files under `dir` (none when it does not exist), with their paths
/// relative to it, sorted. Temp files (`.name.tmp`) are skipped.
fn files_under(dir: &Path) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(current) = pending.pop() {
        let entries = match std::fs::read_dir(&current) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => {
                return Err(err).with_context(|| format!("reading {}", current.display()));
            }
        };
        for entry in entries {
            let entry = entry?;
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() && !entry.file_name().to_string_lossy().starts_with('.') {
                let relative = path
                    .strip_prefix(dir)?
                    .to_str()
                    .with_context(|| format!("{} is not UTF-8", path.display()))?
                    .to_owned();
                found.push((path, relative));
            }
        }
    }
    found.sort();
    Ok(found)
}

fn print_counts(counts: &Counts) {
    for (database, tables) in &counts.databases {
        let tables: Vec<String> = tables
            .iter()
            .filter(|(table, _)| !table.starts_with("seaql_"))
            .map(|(table, rows)| format!("{table} {rows}"))
            .collect();
        println!("  {database}: {}", tables.join(", "));
    }
    println!("  objects: {}", counts.objects);
    if counts.images_left_out > 0 {
        println!(
            "  {} image(s) left out: deleted, or results of jobs not yet completed, while the backup ran",
            counts.images_left_out
        );
    }
}

/// `atelier backup --verify ARCHIVE`: reads the archive whole and checks it.
pub fn verify(archive_path: &Path) -> anyhow::Result<()> {
    let manifest = archive::verify(archive_path)?;
    println!(
        "{}: a whole Atelier backup of {} (atelier {}), {} files match the manifest",
        archive_path.display(),
        manifest.created_at,
        manifest.atelier_version,
        manifest.files.len()
    );
    print_counts(&manifest.counts);
    Ok(())
}

/// `atelier restore ARCHIVE --data-dir DIR`: checks the archive, unpacks it into a
/// new directory beside `target`, checks the databases, and renames it to `target`.
/// A `target` that exists and is not empty is refused unless `force`, and then
/// replaced whole.
pub async fn restore(archive_path: &Path, target: &Path, force: bool) -> anyhow::Result<()> {
    let occupied = match std::fs::read_dir(target) {
        Ok(mut entries) => entries.next().is_some(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => false,
        Err(err) => return Err(err).with_context(|| format!("reading {}", target.display())),
    };
    if occupied && !force {
        bail!(
            "{} is not empty: restore into a new directory, or pass --force to replace it \
             (stop any platform using it first)",
            target.display()
        );
    }
    let manifest = archive::verify(archive_path)?;
    let name = target
        .file_name()
        .with_context(|| format!("{} names no directory", target.display()))?
        .to_string_lossy()
        .into_owned();
    let parent = match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{name}.restore-"))
        .tempdir_in(&parent)
        .with_context(|| format!("making a directory in {}", parent.display()))?;
    unpack(archive_path, &manifest, staging.path())?;
    for file in &manifest.files {
        if let Some(database) = file.path.strip_prefix(archive::DATABASES) {
            snapshot::check_integrity(&staging.path().join(database)).await?;
        }
    }
    std::fs::File::open(staging.path())
        .and_then(|dir| dir.sync_all())
        .ok();

    // Into place: the old directory (an empty one, or one --force replaces) is moved
    // aside first and removed once the new one is there.
    let restored = staging.keep();
    let aside = parent.join(format!(
        ".{name}.replaced-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let moved_aside = target.exists();
    if moved_aside {
        std::fs::rename(target, &aside)
            .with_context(|| format!("moving {} aside", target.display()))?;
    }
    if let Err(err) = std::fs::rename(&restored, target) {
        if moved_aside {
            let _ = std::fs::rename(&aside, target);
        }
        let _ = std::fs::remove_dir_all(&restored);
        return Err(err).with_context(|| format!("renaming into {}", target.display()));
    }
    std::fs::File::open(&parent)
        .and_then(|dir| dir.sync_all())
        .ok();
    if moved_aside {
        std::fs::remove_dir_all(&aside)
            .with_context(|| format!("removing the replaced {}", aside.display()))?;
    }

    println!(
        "restored the backup of {} into {} ({} files, checksums verified)",
        manifest.created_at,
        target.display(),
        manifest.files.len()
    );
    print_counts(&manifest.counts);
    println!(
        "start it with DATA_DIR={} (JWT keys in {}/keys, the default JWT_KEYS_DIR)",
        target.display(),
        target.display()
    );
    if manifest
        .files
        .iter()
        .any(|f| f.path == archive::STORAGE_KEY)
    {
        println!(
            "objects are encrypted: set STORAGE_ENCRYPTION_KEY_FILE={}/storage-encryption.key",
            target.display()
        );
    }
    if !manifest
        .files
        .iter()
        .any(|f| f.path == archive::URL_SIGNING_KEY)
    {
        println!(
            "the archive holds no URL-signing key: set URL_SIGNING_KEY as the backed-up platform had it"
        );
    }
    Ok(())
}

/// Writes every entry of the archive into `dir`, laid out as a data directory,
/// checking each against the manifest as it goes.
fn unpack(archive_path: &Path, manifest: &Manifest, dir: &Path) -> anyhow::Result<()> {
    let expected: std::collections::HashMap<&str, &archive::FileEntry> = manifest
        .files
        .iter()
        .map(|file| (file.path.as_str(), file))
        .collect();
    let objects = LocalStore::new(dir.join("objects"))
        .map_err(|err| anyhow::anyhow!("making the objects directory: {err}"))?;
    archive::read_entries(archive_path, |name, body| {
        let entry = expected
            .get(name)
            .with_context(|| format!("{name} is not in the manifest"))?;
        let mut hashing = archive::Hashing::new(body);
        if let Some(key) = name.strip_prefix(archive::OBJECTS) {
            let content_type = entry
                .content_type
                .as_deref()
                .unwrap_or(atelier_storage::DEFAULT_CONTENT_TYPE);
            objects
                .put_stored(key, content_type, &mut hashing)
                .map_err(|err| anyhow::anyhow!("storing object {key}: {err}"))?;
        } else {
            write_private(&dir.join(data_path(name)?), &mut hashing)?;
        }
        let (size, sha256) = hashing.finish();
        ensure!(
            size == entry.size && sha256 == entry.sha256,
            "{name} changed since the archive was checked"
        );
        Ok(())
    })?;
    Ok(())
}

/// Where an archive entry (not an object) goes in a data directory.
fn data_path(name: &str) -> anyhow::Result<PathBuf> {
    let path = if let Some(database) = name.strip_prefix(archive::DATABASES) {
        PathBuf::from(database)
    } else if let Some(key) = name.strip_prefix(archive::JWT_KEYS) {
        Path::new("keys").join(key)
    } else if name == archive::URL_SIGNING_KEY {
        PathBuf::from("url-signing.key")
    } else if name == archive::STORAGE_KEY {
        PathBuf::from("storage-encryption.key")
    } else if let Some(tls) = name.strip_prefix(archive::TLS) {
        Path::new("tls").join(tls)
    } else {
        bail!("{name} has no place in a data directory")
    };
    Ok(path)
}

/// Writes `body` to a new file at `path`, 0600, its directories 0700.
fn write_private(path: &Path, body: &mut dyn Read) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    std::io::copy(body, &mut file).with_context(|| format!("writing {}", path.display()))?;
    file.sync_all()
        .with_context(|| format!("syncing {}", path.display()))?;
    Ok(())
}
