//! The network's own names: the `search` and `domain` lines of a resolv.conf(5), which a
//! `resolv_conf` upstream with `route_search = true` answers (a VPN or DHCP writes
//! `search corp.example` next to `nameserver 10.8.0.1`).
//!
//! Syntax as glibc reads it: `domain NAME` or `search NAME...`, the keyword at the start
//! of the line; the two are exclusive and the last such line wins. A single-label name
//! (`com`, `lan`) is never taken: whoever writes the file (any DHCP server the laptop
//! meets) could otherwise claim a whole top-level domain; list such a name in `domains`.

use std::{io, path::Path};

use super::domain_key;

/// A resolv.conf is a few hundred bytes; this is plenty.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// The search domains of a resolv.conf text: lowercase, without the trailing dot, each
/// once, in file order; single-label names, the root and malformed names left out.
pub fn parse_search(text: &str) -> Vec<String> {
    let mut last: Option<Vec<&str>> = None;
    for line in text.lines() {
        // libc: a comment runs from `#` or `;` to the end of the line.
        let line = line.find(['#', ';']).map_or(line, |at| &line[..at]);
        let mut words = line.split_ascii_whitespace();
        match (line.starts_with(|c: char| c.is_ascii_alphabetic()), words.next()) {
            (true, Some("search")) => last = Some(words.collect()),
            (true, Some("domain")) => last = Some(words.take(1).collect()),
            _ => {}
        }
    }
    let mut out: Vec<String> = Vec::new();
    for word in last.unwrap_or_default() {
        let name = word.trim_end_matches('.').to_ascii_lowercase();
        let labels = name.split('.').count();
        if name.is_empty() || labels < 2 || domain_key(&name).is_none() || out.contains(&name) {
            continue;
        }
        out.push(name);
    }
    out
}

/// Reads `path` and returns its search domains ([`parse_search`]).
pub fn read_search(path: &Path) -> io::Result<Vec<String>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.take(MAX_FILE_BYTES).read_to_end(&mut bytes)?;
    Ok(parse_search(&String::from_utf8_lossy(&bytes)))
}

#[cfg(test)]
mod tests {
    use super::parse_search;

    #[test]
    fn the_last_search_or_domain_line_wins() {
        let text = "domain old.example\nnameserver 10.8.0.1\nsearch Corp.Example. lab.corp.example # vpn\n";
        assert_eq!(parse_search(text), vec!["corp.example", "lab.corp.example"]);
        assert_eq!(parse_search("search a.example\ndomain b.example\n"), vec!["b.example"]);
        assert_eq!(parse_search("domain a.example b.example\n"), vec!["a.example"], "domain takes one name");
    }

    #[test]
    fn single_labels_the_root_and_junk_are_never_taken() {
        let text = "search com lan . a..b corp.example corp.example\n";
        assert_eq!(parse_search(text), vec!["corp.example"]);
    }

    #[test]
    fn only_keyword_lines_count() {
        assert!(
            parse_search("# search corp.example\n  search corp.example\nsearches x.example\n").is_empty()
        );
        assert!(parse_search("nameserver 10.0.0.1\n").is_empty());
    }
}
