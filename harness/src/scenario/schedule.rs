//! Checks the scenario's CI section needs, kept here (below `ci` and `history`) so that
//! validation never reaches up: the cron line an interval becomes, and webhook URLs.

use std::time::Duration;

/// A cron line for a periodic interval. GitHub schedules are cron lines, so the interval
/// must come back evenly: divide an hour, divide a day in whole hours, or be one day or
/// one week. The minute (and for daily and weekly runs the hour and day) is spread by the
/// branch name, so branches do not all start at once.
pub fn cron(interval: Duration, branch: &str) -> Result<String, String> {
    let err = || {
        format!(
            "GitHub Actions runs on cron lines: the interval must divide an hour (e.g. 30m), \
             divide a day in whole hours (2h, 12h), or be 24h or 7d; got {}",
            humantime::format_duration(interval)
        )
    };
    let secs = interval.as_secs();
    if secs == 0 || !secs.is_multiple_of(60) || interval.subsec_nanos() != 0 {
        return Err(err());
    }
    let spread: u64 = branch.bytes().map(u64::from).sum();
    let mins = secs / 60;
    if mins < 60 {
        if !60u64.is_multiple_of(mins) || mins < 5 {
            return Err(err());
        }
        return Ok(format!("{}-59/{mins} * * * *", spread % mins));
    }
    if !mins.is_multiple_of(60) {
        return Err(err());
    }
    let (minute, hours) = (spread % 60, mins / 60);
    match hours {
        1 => Ok(format!("{minute} * * * *")),
        h if h < 24 && 24u64.is_multiple_of(h) => {
            Ok(format!("{minute} {}-23/{h} * * *", spread % h))
        }
        24 => Ok(format!("{minute} {} * * *", spread % 24)),
        168 => Ok(format!("{minute} {} * * {}", spread % 24, spread % 7)),
        _ => Err(err()),
    }
}

/// Checks a webhook URL: http or https, with a host.
pub fn check_url(url: &str) -> Result<(), String> {
    let uri: ureq::http::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(h)) if !h.is_empty() => Ok(()),
        _ => Err(format!(
            "{url:?} is not an http:// or https:// URL with a host"
        )),
    }
}
