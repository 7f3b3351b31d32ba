//! Durations as users write them in manifests (`500ms`, `30s`, `5m`, `2h`, `1d`).

use std::time::Duration;

/// Parses a human duration such as `30s`, `5m`, `1h30m` or `500ms`.
///
/// A bare number is refused: units are required so that `30` can never be misread as
/// minutes when seconds were meant.
pub fn parse(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("duration is empty (write it like 30s, 5m or 2h)".to_owned());
    }
    if trimmed.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "duration {trimmed:?} has no unit (write it like {trimmed}s or {trimmed}m)"
        ));
    }
    humantime::parse_duration(trimmed).map_err(|e| {
        format!("duration {trimmed:?} is not valid: {e} (write it like 30s, 5m or 2h)")
    })
}

#[cfg(test)]
mod tests {
    use super::parse;
    use std::time::Duration;

    #[test]
    fn parses_the_units_users_write() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse("1d"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
    }

    #[test]
    fn refuses_numbers_without_units_and_garbage() {
        assert!(parse("30").unwrap_err().contains("no unit"));
        assert!(parse("").is_err());
        assert!(parse("soon").unwrap_err().contains("\"soon\""));
    }
}
