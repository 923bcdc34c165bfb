//! Where the server's secrets come from, and how they are kept out of the log: the master
//! keys that encrypt webhook secrets and header values (`CRMHOOKS_MASTER_KEY`, a key file, or
//! in `--dev` a key file made beside the database), the bootstrap API key from a file, and
//! database URLs with their password replaced by `***`.

use std::path::{Path, PathBuf};

use crmhooks_store::{Keyring, MasterKey};

use crate::config::{Config, ConfigError};

/// The master keys of `config`, and a warning to log once the server is up (the `--dev` key
/// file in use). Without a key outside `--dev`: an error saying how to give one.
pub fn master_keyring(config: &Config) -> Result<(Keyring, Option<String>), ConfigError> {
    let inline = config
        .master_key
        .as_ref()
        .map(|k| k.0.as_str())
        .filter(|k| !k.trim().is_empty());
    let file = config.master_key_file.as_deref().filter(|f| !f.is_empty());
    match (inline, file) {
        (Some(_), Some(_)) => Err(ConfigError(
            "give the master key either as CRMHOOKS_MASTER_KEY or as a file (--master-key-file, CRMHOOKS_MASTER_KEY_FILE), not both".into(),
        )),
        (Some(list), None) => Keyring::parse(list)
            .map(|k| (k, None))
            .map_err(|e| ConfigError(format!("CRMHOOKS_MASTER_KEY: {e}"))),
        (None, Some(path)) => read_key_file(Path::new(path)).map(|k| (k, None)),
        (None, None) if config.dev => {
            let path = dev_key_path(&config.database);
            let created = ensure_dev_key(&path)?;
            let keys = read_key_file(&path)?;
            let how = if created { "made and using" } else { "using" };
            Ok((
                keys,
                Some(format!(
                    "--dev without a master key: {how} the key file {} (keep it with the database; in production give CRMHOOKS_MASTER_KEY or --master-key-file)",
                    path.display()
                )),
            ))
        }
        (None, None) => Err(ConfigError(
            "no master key: webhook secrets and header values are stored encrypted under one. Give it as CRMHOOKS_MASTER_KEY=kid:base64key or in a file with --master-key-file PATH (CRMHOOKS_MASTER_KEY_FILE); `crmhooks secrets generate-key` makes one. (--dev makes one beside the database.)".into(),
        )),
    }
}

/// Reads a key file: `kid:base64key` lines (or a comma-separated list), `#` comments.
pub fn read_key_file(path: &Path) -> Result<Keyring, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError(format!(
            "cannot read the master key file {}: {e}",
            path.display()
        ))
    })?;
    Keyring::parse(&text)
        .map_err(|e| ConfigError(format!("master key file {}: {e}", path.display())))
}

/// Where `--dev` keeps its master key: beside a SQLite database (`<file>.key`), or for
/// PostgreSQL in the data directory (`CRMHOOKS_DATA_DIR`, else `$XDG_DATA_HOME/crmhooks`,
/// else `~/.local/share/crmhooks`, else the working directory).
pub fn dev_key_path(database: &str) -> PathBuf {
    if let Some(path) = database.strip_prefix("sqlite:") {
        let path = path.trim_start_matches("//");
        let path = path.split('?').next().unwrap_or(path);
        return PathBuf::from(format!("{path}.key"));
    }
    let dir = std::env::var_os("CRMHOOKS_DATA_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_DATA_HOME").map(|d| PathBuf::from(d).join("crmhooks")))
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share/crmhooks"))
        })
        .unwrap_or_else(|| PathBuf::from("."));
    dir.join("dev-master.key")
}

/// Makes the `--dev` key file when it is missing (readable by its owner only); true when made.
/// Two servers starting at once never both write one: the file appears whole, or not at all.
fn ensure_dev_key(path: &Path) -> Result<bool, ConfigError> {
    if path.exists() {
        return Ok(false);
    }
    let fail = |e: std::io::Error| {
        ConfigError(format!(
            "cannot make the --dev master key file {}: {e}",
            path.display()
        ))
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let (_, line) = MasterKey::generate("dev").map_err(|e| ConfigError(e.to_string()))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    write_private(&tmp, &format!("# crmhooks --dev master key\n{line}\n")).map_err(fail)?;
    // A hard link does not replace a file another process made meanwhile.
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(fail(e)),
    }
}

/// Writes a new file that only its owner may read.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// The bootstrap API key: `api_key`, or the first line of `api_key_file`.
pub fn bootstrap_key(config: &Config) -> Result<Option<String>, ConfigError> {
    let inline = config.api_key.as_deref().filter(|k| !k.is_empty());
    let file = config.api_key_file.as_deref().filter(|f| !f.is_empty());
    match (inline, file) {
        (Some(_), Some(_)) => Err(ConfigError(
            "give the API key either as --api-key/CRMHOOKS_API_KEY or as --api-key-file/CRMHOOKS_API_KEY_FILE, not both".into(),
        )),
        (Some(k), None) => Ok(Some(k.to_owned())),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError(format!("cannot read the API key file {path}: {e}")))?;
            let key = text.lines().next().unwrap_or_default().trim().to_owned();
            if key.is_empty() {
                return Err(ConfigError(format!("the API key file {path} is empty")));
            }
            Ok(Some(key))
        }
        (None, None) => Ok(None),
    }
}

/// A database URL fit for the log: the password (in the user part or a `password=` query
/// parameter) replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _)) => format!("{name}:***@{host}"),
            None => format!("{user}@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => p.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_printed_config_does_not_show_the_master_key() {
        let mut flags = toml::value::Table::new();
        flags.insert("master_key".into(), "k1:c2VjcmV0LW1hdGVyaWFs".into());
        let cfg = Config::load(None, flags).unwrap();
        assert!(!format!("{cfg:?}").contains("c2VjcmV0"));
    }

    #[test]
    fn passwords_in_database_urls_are_redacted() {
        assert_eq!(
            redact_url("postgres://crm:hunter2@db.example:5432/crm"),
            "postgres://crm:***@db.example:5432/crm"
        );
        assert_eq!(
            redact_url("postgres://crm:p@ss@db/crm?sslmode=require&password=x"),
            "postgres://crm:***@db/crm?sslmode=require&password=***"
        );
        assert_eq!(redact_url("postgres://db/crm"), "postgres://db/crm");
        assert_eq!(redact_url("postgres://crm@db"), "postgres://crm@db");
        assert_eq!(
            redact_url("sqlite://data/crmhooks.db"),
            "sqlite://data/crmhooks.db"
        );
    }

    #[test]
    fn the_dev_key_goes_beside_a_sqlite_file() {
        assert_eq!(
            dev_key_path("sqlite://data/c.db?mode=rwc"),
            PathBuf::from("data/c.db.key")
        );
        assert_eq!(dev_key_path("sqlite:c.db"), PathBuf::from("c.db.key"));
    }

    #[test]
    fn the_dev_key_file_is_made_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/db.key");
        assert!(ensure_dev_key(&path).unwrap());
        assert!(!ensure_dev_key(&path).unwrap());
        let keys = read_key_file(&path).unwrap();
        assert_eq!(keys.kids(), ["dev"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
