//! Secrets named by `*_file` and `*_env` keys (upstream passwords, the object store's keys, the
//! cluster's shared secret): one reading of each, so every key treats its file and variable the
//! same way. Messages name the file or variable, never the value.

use std::path::Path;

use super::error::io_reason;
use crate::secret::Secret;

/// The secret in a file, from the result of reading it: the text without one trailing line ending
/// (as `echo` and editors write it; anything else is the secret). `what` names the value in the
/// messages ("password").
///
/// # Errors
/// The reason, when the file cannot be read or holds nothing.
pub(super) fn from_file(
    read: std::io::Result<String>,
    path: &Path,
    what: &str,
) -> Result<Secret, String> {
    let text = read.map_err(|e| {
        format!(
            "cannot read {} ({}); create it with the {what} on one line, readable by wharf only",
            path.display(),
            io_reason(&e)
        )
    })?;
    Secret::from_file_text(&text)
        .ok_or_else(|| format!("{} is empty; put the {what} in it", path.display()))
}

/// Whether `var` can name an environment variable (letters, digits and `_`, not starting with a
/// digit). A key that fails this likely holds the secret itself, pasted into the wrong key, so
/// the caller's message must not echo it.
pub(super) fn is_env_name(var: &str) -> bool {
    var.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_trailing_line_ending_is_dropped_and_nothing_else() {
        let path = Path::new("/etc/wharf/pw");
        let secret = |text: &str| from_file(Ok(text.into()), path, "password");
        assert_eq!(secret("hunter2\n").unwrap().expose(), "hunter2");
        assert_eq!(secret("hunter2\r\n").unwrap().expose(), "hunter2");
        assert_eq!(secret(" two words \n\n").unwrap().expose(), " two words \n");
        assert_eq!(
            secret("\n").unwrap_err(),
            "/etc/wharf/pw is empty; put the password in it"
        );
        let missing = from_file(Err(std::io::ErrorKind::NotFound.into()), path, "password");
        assert_eq!(
            missing.unwrap_err(),
            "cannot read /etc/wharf/pw (no such file); create it with the password on one line, readable by wharf only"
        );
    }

    #[test]
    fn environment_variable_names() {
        assert!(is_env_name("WHARF_PW"));
        assert!(is_env_name("_x1"));
        assert!(!is_env_name("1X"));
        assert!(!is_env_name("wJalr/K7MDENG"));
        assert!(!is_env_name(""));
    }
}
