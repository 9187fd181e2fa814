//! A consistent copy of a running embedded platform: its SQLite databases, then the
//! objects their rows name.
//!
//! Each database is copied with `VACUUM INTO`: one read transaction, so the copy is
//! that database as it was at one instant, whatever is written meanwhile (WAL lets
//! writers go on). The databases are copied one after the other, referrers before
//! what they refer to, since a row is always written after the rows it names (an
//! account before its images, an image before the jobs on it, a result before the
//! job that lists it): `processing` first, `auth` last. So every image, user and
//! result a copied job names was already written when the later copy was taken.
//!
//! Objects come after the databases, and only those a copied image row names:
//! an object is written whole (to a temp file, synced, renamed) before its row, so an
//! upload still in flight has no row in the copy, and its object is not copied.
//! What can go wrong is the other way: an image deleted after the image database
//! was copied has its objects removed (objects first, then the row), so the copy
//! has a row whose object is gone. Such rows are deleted from the copy. So are
//! result images whose job the processing copy does not hold as completed (stored
//! after processing was copied): after a restore, that job runs again and stores
//! its result again, and no result exists without a job that lists it.

use std::{
    collections::{BTreeMap, HashSet},
    fs::File,
    path::{Path, PathBuf},
};

use anyhow::{Context, ensure};
use atelier_storage::LocalStore;
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement,
};
use uuid::Uuid;

use super::archive::{self, Writer};

/// The services' databases in the order they are copied (see the module's notes).
/// Any other `*.db` file in the data directory is copied after them.
const ORDER: [&str; 5] = ["processing", "user", "workflow", "image", "auth"];

/// The database files under `data_dir`, in the order they are to be copied.
pub fn database_files(data_dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut others = Vec::new();
    for entry in std::fs::read_dir(data_dir)
        .with_context(|| format!("reading {} (DATA_DIR)", data_dir.display()))?
    {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.ends_with(".db") && entry.file_type()?.is_file() {
            others.push(name);
        }
    }
    let mut files: Vec<String> = ORDER
        .iter()
        .map(|service| format!("{service}.db"))
        .filter(|name| others.contains(name))
        .collect();
    others.retain(|name| !files.contains(name));
    others.sort();
    files.extend(others);
    Ok(files)
}

async fn open(path: &Path) -> anyhow::Result<DatabaseConnection> {
    // `mode=rw`: never create a database that is not there.
    let mut options = ConnectOptions::new(format!("sqlite://{}?mode=rw", path.display()));
    options.max_connections(1).sqlx_logging(false);
    Database::connect(options)
        .await
        .with_context(|| format!("opening {}", path.display()))
}

/// Copies the database at `source` to `dest` as it is at one instant.
pub async fn copy_database(source: &Path, dest: &Path) -> anyhow::Result<()> {
    let db = open(source).await?;
    let into = dest.display().to_string().replace('\'', "''");
    db.execute_unprepared(&format!("VACUUM INTO '{into}'"))
        .await
        .with_context(|| format!("copying {}", source.display()))?;
    db.close().await.ok();
    Ok(())
}

/// Rows per table of the database at `path`.
pub async fn table_counts(path: &Path) -> anyhow::Result<BTreeMap<String, u64>> {
    let db = open(path).await?;
    let tables = db
        .query_all_raw(Statement::from_string(
            DbBackend::Sqlite,
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        ))
        .await?;
    let mut counts = BTreeMap::new();
    for table in tables {
        let name: String = table.try_get("", "name")?;
        let quoted = name.replace('"', "\"\"");
        let row = db
            .query_one_raw(Statement::from_string(
                DbBackend::Sqlite,
                format!("SELECT COUNT(*) AS n FROM \"{quoted}\""),
            ))
            .await?
            .context("a count")?;
        let n: i64 = row.try_get("", "n")?;
        counts.insert(name, n as u64);
    }
    db.close().await.ok();
    Ok(counts)
}

/// Checks the database at `path` is whole (`PRAGMA integrity_check`).
pub async fn check_integrity(path: &Path) -> anyhow::Result<()> {
    let db = open(path).await?;
    let rows = db
        .query_all_raw(Statement::from_string(
            DbBackend::Sqlite,
            "PRAGMA integrity_check",
        ))
        .await?;
    let verdict: Vec<String> = rows
        .iter()
        .map(|row| row.try_get_by_index::<String>(0))
        .collect::<Result<_, _>>()?;
    db.close().await.ok();
    ensure!(
        verdict == ["ok"],
        "{} fails its integrity check: {}",
        path.display(),
        verdict.join("; ")
    );
    Ok(())
}

/// An image row of the copied image database, as far as objects go.
struct ImageRow {
    id: Uuid,
    user_id: Uuid,
    result: bool,
    job_id: Option<Uuid>,
    keys: Vec<String>,
}

async fn image_rows(db: &DatabaseConnection) -> anyhow::Result<Vec<ImageRow>> {
    let rows = db
        .query_all_raw(Statement::from_string(
            DbBackend::Sqlite,
            "SELECT id, user_id, kind, job_id, storage_path, thumbnail_path FROM images",
        ))
        .await
        .context("reading the copied images")?;
    rows.into_iter()
        .map(|row| {
            let storage_path: String = row.try_get("", "storage_path")?;
            let thumbnail_path: Option<String> = row.try_get("", "thumbnail_path")?;
            let mut keys = vec![storage_path];
            keys.extend(thumbnail_path.filter(|thumbnail| *thumbnail != keys[0]));
            let kind: String = row.try_get("", "kind")?;
            Ok(ImageRow {
                id: row.try_get("", "id")?,
                user_id: row.try_get("", "user_id")?,
                result: kind == "result",
                job_id: row.try_get("", "job_id")?,
                keys,
            })
        })
        .collect()
}

/// The results the copied processing database's completed jobs list.
async fn completed_results(path: &Path) -> anyhow::Result<HashSet<Uuid>> {
    let db = open(path).await?;
    let rows = db
        .query_all_raw(Statement::from_string(
            DbBackend::Sqlite,
            "SELECT result_image_id, result_image_ids FROM processing_jobs WHERE status = 'completed'",
        ))
        .await
        .context("reading the copied jobs")?;
    let mut results = HashSet::new();
    for row in rows {
        let first: Option<Uuid> = row.try_get("", "result_image_id")?;
        let all: serde_json::Value = row.try_get("", "result_image_ids")?;
        results.extend(first);
        results.extend(
            all.as_array()
                .into_iter()
                .flatten()
                .filter_map(|id| id.as_str()?.parse::<Uuid>().ok()),
        );
    }
    db.close().await.ok();
    Ok(results)
}

/// Copies the objects the copied image database at `image_db` names from `store`
/// into the archive, and deletes the rows that cannot be kept (see the module's
/// notes) from that copy. Returns (objects copied, rows left out).
pub async fn copy_objects(
    store: &LocalStore,
    image_db: &Path,
    processing_db: Option<&Path>,
    writer: &mut Writer,
) -> anyhow::Result<(u64, u64)> {
    let results = match processing_db {
        Some(path) => Some(completed_results(path).await?),
        None => None,
    };
    let db = open(image_db).await?;
    let rows = image_rows(&db).await?;
    let mut copied = HashSet::new();
    let mut left_out = Vec::new();
    for row in rows {
        let listed = !row.result
            || results
                .as_ref()
                .is_none_or(|results| results.contains(&row.id));
        if !listed {
            tracing::info!(image_id = %row.id, job_id = ?row.job_id, "result of a job not completed in the copy: left out");
            left_out.push(row);
            continue;
        }
        // Open every object of the row before copying any: one gone means the row
        // goes, and none of its objects is copied.
        let mut opened: Vec<(String, File, String)> = Vec::with_capacity(row.keys.len());
        for key in &row.keys {
            if copied.contains(key) {
                continue;
            }
            match store
                .open_stored(key)
                .with_context(|| format!("opening object {key}"))?
            {
                Some((file, content_type)) => opened.push((key.clone(), file, content_type)),
                None => {
                    opened.clear();
                    break;
                }
            }
        }
        let whole = row
            .keys
            .iter()
            .all(|key| copied.contains(key) || opened.iter().any(|(opened, ..)| opened == key));
        if !whole {
            tracing::info!(image_id = %row.id, "image deleted while the backup ran: left out");
            left_out.push(row);
            continue;
        }
        for (key, file, content_type) in opened {
            let size = file.metadata()?.len();
            writer.add(
                &format!("{}{key}", archive::OBJECTS),
                size,
                std::io::BufReader::with_capacity(256 * 1024, file),
                Some(content_type),
            )?;
            copied.insert(key);
        }
    }
    let store = atelier_image::store::Store::new(db.clone());
    for row in &left_out {
        store.delete(row.user_id, row.id).await?;
        store.forget_shares_of(row.id).await?;
    }
    db.close().await.ok();
    Ok((copied.len() as u64, left_out.len() as u64))
}

/// Where a database's copy goes before it enters the archive.
pub fn staged(staging: &Path, name: &str) -> PathBuf {
    staging.join(name)
}
