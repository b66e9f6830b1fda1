//! The captive-portal policy (opt-in, `captive_portal = true` on a `resolv_conf`
//! upstream). On a hotel or airport network everything is blocked until the user logs in
//! on the portal's page, and an operating system finds that page by asking for a
//! connectivity-check name: the network's resolver answers it with the portal's address.
//! A strict stub cannot reach the portal, so users turn encryption off. Instead, while the
//! default set has no connection up, these names alone go to the network's resolver, never
//! cached and with TTL 0 (the portal's answer is a lie for as long as it lasts); every
//! other name stays strict, and once a default upstream is connected again, these names
//! go there too.

/// The connectivity-check names, as the projects and vendors use them (each with the names
/// under it). Kept to hosts that exist for this purpose, so that little else can be asked
/// in clear text while the portal is up.
pub const CHECK_NAMES: &[&str] = &[
    // NetworkManager (GNOME, Fedora; Ubuntu; Debian; KDE)
    "nmcheck.gnome.org",
    "connectivity-check.ubuntu.com",
    "network-test.debian.org",
    "networkcheck.kde.org",
    // Firefox
    "detectportal.firefox.com",
    // Chrome, ChromeOS and Android
    "clients3.google.com",
    "connectivitycheck.gstatic.com",
    "connectivitycheck.android.com",
    // Apple (macOS, iOS)
    "captive.apple.com",
    // Windows (NCSI)
    "www.msftconnecttest.com",
    "www.msftncsi.com",
    "dns.msftncsi.com",
];

/// The TTL of a captive-portal answer: none. A client must not keep the portal's address
/// once it has logged in.
pub const CAPTIVE_TTL: u32 = 0;
