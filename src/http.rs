//! What the HTTPS clients (the bundle's downloads, the Proxmox VE API) and the URIs groundwork
//! writes share.

/// An error with its causes: a client library's own words ("error sending request") say
/// little alone.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let next = inner.to_string();
        if !s.contains(&next) {
            s.push_str(": ");
            s.push_str(&next);
        }
        source = inner.source();
    }
    s
}

/// RFC 3986 percent-encoding of one URI component (a path segment, a user, a password): all
/// but the unreserved characters, so no value can change the URI's structure.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unreserved_characters_stay() {
        assert_eq!(percent_encode("UPID:pve1:0000:root@pam!gw/x y"), "UPID%3Apve1%3A0000%3Aroot%40pam%21gw%2Fx%20y");
        assert_eq!(percent_encode("a-b._~Z9"), "a-b._~Z9");
        assert_eq!(percent_encode("é"), "%C3%A9");
    }
}
