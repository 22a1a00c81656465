//! The subject scheme: `shoal.events.<kind>.<action>`, and filters over it.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// Every event subject starts with this.
pub const EVENTS_PREFIX: &str = "shoal.events";

/// Pending tasks go to schedulers in a queue group on this subject.
pub const SCHEDULE_WORK_SUBJECT: &str = "shoal.work.schedule";

/// The subject an event of `kind` and `action` is published on.
pub fn subject(kind: &str, action: &str) -> Result<String, Error> {
    check_token("kind", kind)?;
    check_token("action", action)?;
    Ok(format!("{EVENTS_PREFIX}.{kind}.{action}"))
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && !s
            .chars()
            .any(|c| c == '.' || c == '*' || c == '>' || c.is_whitespace() || c.is_control())
}

fn check_token(what: &'static str, value: &str) -> Result<(), Error> {
    if is_token(value) {
        Ok(())
    } else {
        Err(Error::InvalidToken {
            what,
            value: value.to_owned(),
        })
    }
}

/// Checks a subject for publishing (`wildcards == false`) or subscribing.
pub(crate) fn check_subject(subject: &str, wildcards: bool) -> Result<(), Error> {
    let invalid = |reason| Error::InvalidSubject {
        subject: subject.to_owned(),
        reason,
    };
    if subject.is_empty() {
        return Err(invalid("empty"));
    }
    let tokens: Vec<&str> = subject.split('.').collect();
    let last = tokens.len() - 1;
    for (i, token) in tokens.iter().enumerate() {
        match *token {
            "" => return Err(invalid("empty token")),
            "*" | ">" if !wildcards => return Err(invalid("wildcards cannot be published to")),
            "*" => {}
            ">" if i == last => {}
            ">" => return Err(invalid("'>' must be the last token")),
            t if is_token(t) => {}
            _ => return Err(invalid("tokens cannot contain whitespace, '*' or '>'")),
        }
    }
    Ok(())
}

/// Which events a subscription receives: a kind and an action, each either exact or
/// any. Parses from and prints as `kind.action` with `*` for any, and `>` for all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct EventFilter {
    kind: Option<String>,
    action: Option<String>,
}

impl EventFilter {
    /// Every event.
    pub fn all() -> Self {
        Self::default()
    }

    /// Every action on one kind, e.g. `EventFilter::kind("task")`.
    pub fn kind(kind: impl Into<String>) -> Self {
        Self {
            kind: Some(kind.into()),
            action: None,
        }
    }

    /// Narrows to one action, e.g. `EventFilter::kind("task").with_action("create")`.
    pub fn with_action(mut self, action: impl Into<String>) -> Self {
        self.action = Some(action.into());
        self
    }

    /// One action on every kind, e.g. `EventFilter::action("remove")`.
    pub fn action(action: impl Into<String>) -> Self {
        Self::all().with_action(action)
    }

    /// The NATS subject to subscribe to; fails on a kind or action that is not a token.
    pub fn subject(&self) -> Result<String, Error> {
        fn part<'a>(what: &'static str, v: Option<&'a str>) -> Result<&'a str, Error> {
            match v {
                None | Some("*") => Ok("*"),
                Some(v) => check_token(what, v).map(|()| v),
            }
        }
        let kind = part("kind", self.kind.as_deref())?;
        let action = part("action", self.action.as_deref())?;
        Ok(match (kind, action) {
            ("*", "*") => format!("{EVENTS_PREFIX}.>"),
            (kind, action) => format!("{EVENTS_PREFIX}.{kind}.{action}"),
        })
    }
}

impl fmt::Display for EventFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = self.kind.as_deref().unwrap_or("*");
        let action = self.action.as_deref().unwrap_or("*");
        if kind == "*" && action == "*" {
            f.write_str(">")
        } else {
            write!(f, "{kind}.{action}")
        }
    }
}

impl FromStr for EventFilter {
    type Err = Error;

    /// `>`, `*`, `task`, `task.>`, `task.*`, `task.create`, `*.remove`.
    fn from_str(s: &str) -> Result<Self, Error> {
        let any = |t: &str| t == "*" || t == ">";
        let (kind, action) = match s.split_once('.') {
            None => (s, "*"),
            Some((kind, action)) => (kind, action),
        };
        let kind = (!any(kind)).then(|| kind.to_owned());
        let action = (!any(action)).then(|| action.to_owned());
        let filter = EventFilter { kind, action };
        // Validates both parts (and rejects `a.b.c`, whose action contains a '.').
        filter.subject()?;
        Ok(filter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_follow_the_scheme() -> Result<(), Error> {
        assert_eq!(subject("task", "create")?, "shoal.events.task.create");
        for (kind, action) in [
            ("", "create"),
            ("task", ""),
            ("ta.sk", "create"),
            ("task", "*"),
            (">", "create"),
            ("task", "cre ate"),
            ("task\n", "create"),
        ] {
            assert!(
                matches!(subject(kind, action), Err(Error::InvalidToken { .. })),
                "{kind:?}.{action:?} accepted"
            );
        }
        Ok(())
    }

    #[test]
    fn filters_map_to_subjects() -> Result<(), Error> {
        assert_eq!(EventFilter::all().subject()?, "shoal.events.>");
        assert_eq!(EventFilter::kind("task").subject()?, "shoal.events.task.*");
        assert_eq!(
            EventFilter::kind("task").with_action("create").subject()?,
            "shoal.events.task.create"
        );
        assert_eq!(
            EventFilter::action("remove").subject()?,
            "shoal.events.*.remove"
        );
        assert!(EventFilter::kind("a.b").subject().is_err());
        assert!(EventFilter::kind("").subject().is_err());
        Ok(())
    }

    #[test]
    fn filters_parse_and_print() -> Result<(), Error> {
        for (text, subject, printed) in [
            (">", "shoal.events.>", ">"),
            ("*", "shoal.events.>", ">"),
            ("task", "shoal.events.task.*", "task.*"),
            ("task.>", "shoal.events.task.*", "task.*"),
            ("task.create", "shoal.events.task.create", "task.create"),
            ("*.remove", "shoal.events.*.remove", "*.remove"),
        ] {
            let filter: EventFilter = text.parse()?;
            assert_eq!(filter.subject()?, subject, "{text}");
            assert_eq!(filter.to_string(), printed, "{text}");
        }
        for bad in ["", "task.", ".create", "a.b.c", "ta sk"] {
            assert!(bad.parse::<EventFilter>().is_err(), "{bad:?} accepted");
        }
        Ok(())
    }

    #[test]
    fn raw_subjects_are_checked() {
        assert!(check_subject("shoal.work.schedule", false).is_ok());
        assert!(check_subject("shoal.work.*", true).is_ok());
        assert!(check_subject("shoal.>", true).is_ok());
        assert!(check_subject("shoal.work.*", false).is_err());
        assert!(check_subject("shoal.>.x", true).is_err());
        assert!(check_subject("shoal..x", true).is_err());
        assert!(check_subject("", true).is_err());
        assert!(check_subject("sh oal", true).is_err());
    }
}
