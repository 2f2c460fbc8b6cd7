//! [`Preset`]: timeouts named after the standards users must meet.

use std::time::Duration;

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(60 * 60);

/// Timeouts that meet a named standard, set with [`SessionTimeoutBuilder::preset`](crate::SessionTimeoutBuilder::preset).
///
/// A preset sets the idle and the absolute timeout; builder calls after it override either.
/// Each standard's own wording is the authority: read it for your case, and keep the numbers
/// you choose documented, as the standards ask.
///
/// | preset | idle | absolute | source |
/// |---|---|---|---|
/// | [`OwaspAsvs5`](Preset::OwaspAsvs5) | 30 min | 12 h | OWASP ASVS 5.0, V7.3.1 and V7.3.2 |
/// | [`NistAal2`](Preset::NistAal2) | 1 h | 24 h | NIST SP 800-63B-4, AAL2 reauthentication |
/// | [`NistAal3`](Preset::NistAal3) | 15 min | 12 h | NIST SP 800-63B-4, AAL3 reauthentication |
/// | [`PciDss4`](Preset::PciDss4) | 15 min | none | PCI DSS 4.0, requirement 8.2.8 |
///
/// ```
/// use tower_session_timeout::{Preset, SessionTimeoutLayer};
///
/// let layer = SessionTimeoutLayer::builder().preset(Preset::NistAal3).build()?;
/// assert_eq!(layer.policy().idle_timeout(), Preset::NistAal3.idle_timeout());
/// # Ok::<(), tower_session_timeout::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Preset {
    /// OWASP ASVS 5.0, V7.3 "Session Timeout": V7.3.1 asks for an inactivity timeout and
    /// V7.3.2 for an absolute maximum session lifetime, both set by documented risk analysis.
    /// ASVS 5.0 gives no numbers; these are the level 2 numbers of ASVS 4.0.3 (V3.3.2: 30
    /// minutes of inactivity, 12 hours in all), the last version to state them.
    OwaspAsvs5,
    /// NIST SP 800-63B-4, authentication assurance level 2: reauthentication after at most
    /// 1 hour of inactivity and at least once every 24 hours.
    NistAal2,
    /// NIST SP 800-63B-4, authentication assurance level 3: reauthentication after at most
    /// 15 minutes of inactivity and at least once every 12 hours.
    NistAal3,
    /// PCI DSS 4.0, requirement 8.2.8: a session idle for more than 15 minutes requires the
    /// user to authenticate again. PCI DSS sets no absolute limit.
    PciDss4,
}

impl Preset {
    /// The idle timeout the preset sets.
    pub const fn idle_timeout(self) -> Duration {
        match self {
            Preset::OwaspAsvs5 => Duration::from_secs(30 * 60),
            Preset::NistAal2 => HOUR,
            Preset::NistAal3 | Preset::PciDss4 => Duration::from_secs(15 * MINUTE.as_secs()),
        }
    }

    /// The absolute timeout the preset sets, if any.
    pub const fn absolute_timeout(self) -> Option<Duration> {
        match self {
            Preset::OwaspAsvs5 | Preset::NistAal3 => Some(Duration::from_secs(12 * HOUR.as_secs())),
            Preset::NistAal2 => Some(Duration::from_secs(24 * HOUR.as_secs())),
            Preset::PciDss4 => None,
        }
    }

    /// The standard and the requirement the numbers come from.
    pub const fn source(self) -> &'static str {
        match self {
            Preset::OwaspAsvs5 => {
                "OWASP ASVS 5.0 V7.3.1, V7.3.2 (numbers: ASVS 4.0.3 V3.3.2, level 2)"
            }
            Preset::NistAal2 => "NIST SP 800-63B-4, AAL2 reauthentication",
            Preset::NistAal3 => "NIST SP 800-63B-4, AAL3 reauthentication",
            Preset::PciDss4 => "PCI DSS 4.0 requirement 8.2.8",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each preset names the standard its numbers come from, for the docs and the logs.
    #[test]
    fn each_source_names_its_standard() {
        for (preset, standard) in [
            (Preset::OwaspAsvs5, "OWASP ASVS 5.0"),
            (Preset::NistAal2, "AAL2"),
            (Preset::NistAal3, "AAL3"),
            (Preset::PciDss4, "PCI DSS 4.0"),
        ] {
            assert!(preset.source().contains(standard), "{preset:?}");
        }
    }
}
