//! A DHCPDISCOVER from this machine, as a client on the DHCP segment would send it: plain UDP
//! (port 68 to 255.255.255.255:67, broadcast flag set, so servers answer by broadcast), bound to
//! the interface whose subnet holds the DHCP host's address. Nothing runs on a target for it.
//!
//! The packet is built and the answers are read by pure functions ([`discover_packet`],
//! [`parse_offer`], [`segment_of`], [`judge`]); [`listen`] owns the socket.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use tokio::time::Instant;

use super::Failure;

/// How long offers are collected; a second DISCOVER goes out after [`RESEND`].
pub const LISTEN: Duration = Duration::from_secs(2);
const RESEND: Duration = Duration::from_secs(1);
const COOKIE: [u8; 4] = [99, 130, 83, 99];
const OPT_MESSAGE_TYPE: u8 = 53;
const OPT_SERVER_ID: u8 = 54;
const DHCPDISCOVER: u8 = 1;
const DHCPOFFER: u8 = 2;

/// One OFFER: the server that made it (its server identifier, or the packet's source when it
/// has none), where the packet came from, and the address offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offer {
    pub server: Ipv4Addr,
    pub src: Ipv4Addr,
    pub offered: Ipv4Addr,
}

/// A random locally administered unicast MAC: no real client's lease is touched.
pub fn random_mac() -> [u8; 6] {
    let mut mac: [u8; 6] = rand::random();
    mac[0] = (mac[0] & 0xfc) | 0x02;
    mac
}

/// A DHCPDISCOVER (BOOTREQUEST, broadcast flag) from `mac`, asking for netmask, router and DNS.
/// Padded to BOOTP's 300 bytes, which some servers require.
pub fn discover_packet(xid: u32, mac: [u8; 6]) -> Vec<u8> {
    let mut p = vec![0u8; 236];
    p[0] = 1; // BOOTREQUEST
    p[1] = 1; // Ethernet
    p[2] = 6; // MAC length
    p[4..8].copy_from_slice(&xid.to_be_bytes());
    p[10..12].copy_from_slice(&0x8000u16.to_be_bytes()); // answer by broadcast: we have no address
    p[28..34].copy_from_slice(&mac);
    p.extend_from_slice(&COOKIE);
    p.extend_from_slice(&[OPT_MESSAGE_TYPE, 1, DHCPDISCOVER]);
    p.extend_from_slice(&[55, 3, 1, 3, 6]);
    p.push(255);
    p.resize(300, 0);
    p
}

/// The OFFER in `data` for transaction `xid`, received from `src`; anything else (another
/// transaction, another message type, a short or malformed packet) is `None`.
pub fn parse_offer(data: &[u8], xid: u32, src: Ipv4Addr) -> Option<Offer> {
    if data.len() < 240 || data[0] != 2 || data[4..8] != xid.to_be_bytes() || data[236..240] != COOKIE {
        return None;
    }
    let offered = Ipv4Addr::new(data[16], data[17], data[18], data[19]);
    let (mut kind, mut server) = (None, None);
    let mut i = 240;
    while i < data.len() {
        match data[i] {
            255 => break,
            0 => i += 1,
            code => {
                let len = usize::from(*data.get(i + 1)?);
                let value = data.get(i + 2..i + 2 + len)?;
                match (code, value) {
                    (OPT_MESSAGE_TYPE, [t]) => kind = Some(*t),
                    (OPT_SERVER_ID, [a, b, c, d]) => server = Some(Ipv4Addr::new(*a, *b, *c, *d)),
                    _ => {}
                }
                i += 2 + len;
            }
        }
    }
    (kind == Some(DHCPOFFER)).then(|| Offer { server: server.unwrap_or(src), src, offered })
}

/// Where this machine sits relative to the DHCP host's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// This interface has an address in the same subnet.
    On(String),
    /// This machine holds the address itself (on this interface).
    Itself(String),
    /// No interface of this machine is in that subnet.
    Off,
}

/// Which of `ifaces` (name, address, netmask; loopback ignored) is on the segment of `target`.
pub fn segment_of(ifaces: &[(String, Ipv4Addr, Ipv4Addr)], target: Ipv4Addr) -> Segment {
    let real = || ifaces.iter().filter(|(_, ip, _)| !ip.is_loopback());
    if let Some((name, _, _)) = real().find(|(_, ip, _)| *ip == target) {
        return Segment::Itself(name.clone());
    }
    real()
        .find(|(_, ip, mask)| u32::from(*ip) & u32::from(*mask) == u32::from(target) & u32::from(*mask))
        .map_or(Segment::Off, |(name, _, _)| Segment::On(name.clone()))
}

/// The verdict on what answered: an offer from `dhcp` with an address of `ranges` (when there
/// are any), and no other server unless `allow_foreign`. One line either way. Silence from
/// `dhcp` is a timeout even when others answer: that is what failed, allowed or not.
pub fn judge(
    offers: &[Offer],
    dhcp: Ipv4Addr,
    ranges: &[(Ipv4Addr, Ipv4Addr)],
    allow_foreign: bool,
    iface: &str,
) -> Result<String, Failure> {
    let is_ours = |o: &Offer| o.server == dhcp || o.src == dhcp;
    let ours = offers.iter().find(|o| is_ours(o)).map(|o| o.offered);
    let mut others: Vec<String> = Vec::new();
    for o in offers.iter().filter(|o| !is_ours(o)) {
        let line = if o.src == o.server {
            format!("{} (offers {})", o.server, o.offered)
        } else {
            format!("{} (from {}, offers {})", o.server, o.src, o.offered)
        };
        if !others.contains(&line) {
            others.push(line);
        }
    }
    let in_range = |ip: Ipv4Addr| ranges.iter().any(|(s, e)| (u32::from(*s)..=u32::from(*e)).contains(&u32::from(ip)));
    match ours {
        None if others.is_empty() => {
            Err(Failure::timeout(format!("no offer from {dhcp} on {iface} within {} s", LISTEN.as_secs())))
        }
        None => Err(Failure::timeout(format!(
            "no offer from {dhcp} on {iface} within {} s; other servers answer: {}",
            LISTEN.as_secs(),
            others.join(", ")
        ))),
        Some(ip) if !ranges.is_empty() && !in_range(ip) => {
            Err(Failure::mismatch(format!("{dhcp} offered {ip}, outside every range")))
        }
        Some(ip) if !others.is_empty() && !allow_foreign => Err(Failure::mismatch(format!(
            "offer of {ip} from {dhcp}, but other servers answer too: {}",
            others.join(", ")
        ))),
        Some(ip) if others.is_empty() => {
            Ok(format!("offer of {ip} from {dhcp} (on {iface}); no other server answered"))
        }
        Some(ip) => {
            Ok(format!("offer of {ip} from {dhcp} (on {iface}); also answering (allowed): {}", others.join(", ")))
        }
    }
}

/// This machine's IPv4 addresses: (interface, address, netmask).
pub fn local_ipv4() -> Result<Vec<(String, Ipv4Addr, Ipv4Addr)>, String> {
    let ifaces = if_addrs::get_if_addrs().map_err(|e| format!("cannot list this machine's addresses: {e}"))?;
    Ok(ifaces
        .into_iter()
        .filter_map(|i| match i.addr {
            if_addrs::IfAddr::V4(a) => Some((i.name, a.ip, a.netmask)),
            if_addrs::IfAddr::V6(_) => None,
        })
        .collect())
}

/// Broadcasts a DISCOVER on `iface` and collects the OFFERs for [`LISTEN`]. `Err` says why
/// this machine could not send it (port 68 taken, no privilege to bind it, ...).
pub async fn listen(iface: &str) -> Result<Vec<Offer>, String> {
    use socket2::{Domain, Protocol, Socket, Type};
    let bound = || -> std::io::Result<Socket> {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_reuse_address(true)?;
        s.set_broadcast(true)?;
        s.bind_device(Some(iface.as_bytes()))?;
        s.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68).into())?;
        s.set_nonblocking(true)?;
        Ok(s)
    };
    let sock = bound().and_then(|s| tokio::net::UdpSocket::from_std(s.into())).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
            " (binding it needs root or CAP_NET_BIND_SERVICE)"
        } else {
            ""
        };
        format!("cannot listen on {iface} port 68: {e}{hint}")
    })?;
    let xid: u32 = rand::random();
    let packet = discover_packet(xid, random_mac());
    let to = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
    let end = Instant::now() + LISTEN;
    let mut next_send = Instant::now();
    let mut offers: Vec<Offer> = Vec::new();
    let mut buf = vec![0u8; 2048];
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if now >= next_send {
            sock.send_to(&packet, to).await.map_err(|e| format!("cannot send the DISCOVER on {iface}: {e}"))?;
            next_send = now + RESEND;
        }
        let until = end.min(next_send);
        match tokio::time::timeout_at(until, sock.recv_from(&mut buf)).await {
            Err(_) => continue,
            Ok(Err(e)) => return Err(format!("receiving on {iface} port 68: {e}")),
            Ok(Ok((n, from))) => {
                let std::net::SocketAddr::V4(from) = from else { continue };
                if let Some(o) = parse_offer(&buf[..n], xid, *from.ip())
                    && !offers.iter().any(|x| x.server == o.server && x.offered == o.offered)
                {
                    offers.push(o);
                }
            }
        }
    }
    Ok(offers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::Cause;

    const MAC: [u8; 6] = [0x02, 0x67, 0x77, 1, 2, 3];

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    /// An answer to `discover` as a server would build it: BOOTREPLY, the offered address, options.
    fn reply(discover: &[u8], yiaddr: [u8; 4], options: &[u8]) -> Vec<u8> {
        let mut r = discover[..240].to_vec();
        r[0] = 2;
        r[16..20].copy_from_slice(&yiaddr);
        r.extend_from_slice(options);
        r
    }

    #[test]
    fn the_discover_is_a_broadcast_bootrequest_from_the_given_mac() {
        let p = discover_packet(0xdeadbeef, MAC);
        assert_eq!(p.len(), 300);
        assert_eq!(&p[..4], &[1, 1, 6, 0]);
        assert_eq!(&p[4..8], &[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(&p[10..12], &[0x80, 0], "broadcast flag");
        assert_eq!(&p[12..28], &[0; 16], "ciaddr, yiaddr, siaddr, giaddr are zero");
        assert_eq!(&p[28..34], &MAC);
        assert_eq!(&p[34..44], &[0; 10]);
        assert_eq!(&p[236..240], &COOKIE);
        assert_eq!(&p[240..243], &[53, 1, 1], "DHCPDISCOVER");
        assert_eq!(&p[243..248], &[55, 3, 1, 3, 6]);
        assert_eq!(p[248], 255);
    }

    #[test]
    fn random_macs_are_locally_administered_unicast() {
        for _ in 0..64 {
            let m = random_mac();
            assert_eq!(m[0] & 0x03, 0x02, "{m:02x?}");
        }
    }

    #[test]
    fn an_offer_names_its_server_and_address() {
        let d = discover_packet(7, MAC);
        let r = reply(&d, [10, 77, 0, 150], &[53, 1, 2, 54, 4, 10, 77, 0, 32, 1, 4, 255, 255, 255, 0, 255]);
        let o = parse_offer(&r, 7, ip("10.77.0.32")).unwrap();
        assert_eq!(o, Offer { server: ip("10.77.0.32"), src: ip("10.77.0.32"), offered: ip("10.77.0.150") });
        // Padding before the options, and a relay's source: the server identifier still counts.
        let r = reply(&d, [10, 77, 0, 151], &[0, 0, 54, 4, 10, 77, 0, 33, 53, 1, 2, 255]);
        let o = parse_offer(&r, 7, ip("10.77.0.254")).unwrap();
        assert_eq!((o.server, o.src, o.offered), (ip("10.77.0.33"), ip("10.77.0.254"), ip("10.77.0.151")));
        // No server identifier: the source names the server.
        let r = reply(&d, [10, 77, 0, 152], &[53, 1, 2, 255]);
        assert_eq!(parse_offer(&r, 7, ip("10.77.0.40")).unwrap().server, ip("10.77.0.40"));
    }

    #[test]
    fn what_is_not_an_offer_for_this_transaction_is_ignored() {
        let d = discover_packet(7, MAC);
        let offer = [53, 1, 2, 54, 4, 10, 77, 0, 32, 255];
        let src = ip("10.77.0.32");
        assert!(parse_offer(&reply(&d, [10, 77, 0, 150], &offer), 8, src).is_none(), "another xid");
        assert!(parse_offer(&d, 7, src).is_none(), "our own request");
        assert!(parse_offer(&reply(&d, [10, 77, 0, 150], &[53, 1, 5, 255]), 7, src).is_none(), "an ACK");
        assert!(parse_offer(&reply(&d, [10, 77, 0, 150], &[54, 4, 10, 77, 0, 32, 255]), 7, src).is_none(), "no type");
        let mut bad = reply(&d, [10, 77, 0, 150], &offer);
        bad[236] = 0;
        assert!(parse_offer(&bad, 7, src).is_none(), "no magic cookie");
        assert!(parse_offer(&bad[..200], 7, src).is_none(), "short");
        // An option whose length runs past the end: malformed, not a panic.
        assert!(parse_offer(&reply(&d, [10, 77, 0, 150], &[53, 1, 2, 54, 9, 10]), 7, src).is_none());
        assert!(parse_offer(&reply(&d, [10, 77, 0, 150], &[53]), 7, src).is_none());
    }

    #[test]
    fn the_segment_is_the_interface_whose_subnet_holds_the_address() {
        let m24 = ip("255.255.255.0");
        let ifaces = vec![
            ("lo".to_string(), ip("127.0.0.1"), ip("255.0.0.0")),
            ("eth0".to_string(), ip("192.0.2.2"), m24),
            ("labbr0".to_string(), ip("10.77.0.1"), m24),
        ];
        assert_eq!(segment_of(&ifaces, ip("10.77.0.32")), Segment::On("labbr0".into()));
        assert_eq!(segment_of(&ifaces, ip("10.77.0.1")), Segment::Itself("labbr0".into()));
        assert_eq!(segment_of(&ifaces, ip("10.78.0.32")), Segment::Off);
        assert_eq!(segment_of(&ifaces, ip("127.0.0.2")), Segment::Off, "loopback is no segment");
    }

    #[test]
    fn the_verdict_wants_our_offer_from_a_range_and_no_other_server() {
        let dhcp = ip("10.77.0.32");
        let ranges = [(ip("10.77.0.100"), ip("10.77.0.199"))];
        let ours = Offer { server: dhcp, src: dhcp, offered: ip("10.77.0.150") };
        let foreign = Offer { server: ip("10.77.0.33"), src: ip("10.77.0.33"), offered: ip("10.77.0.250") };
        let ok = judge(&[ours], dhcp, &ranges, false, "labbr0").unwrap();
        assert_eq!(ok, "offer of 10.77.0.150 from 10.77.0.32 (on labbr0); no other server answered");

        let e = judge(&[], dhcp, &ranges, false, "labbr0").unwrap_err();
        assert_eq!(e, Failure::timeout("no offer from 10.77.0.32 on labbr0 within 2 s"));
        // Our server is silent: that is the failure, whoever else answers.
        for allow_foreign in [false, true] {
            let e = judge(&[foreign], dhcp, &ranges, allow_foreign, "labbr0").unwrap_err();
            assert_eq!(e.cause, Cause::Timeout, "{e}");
            assert!(
                e.message.contains("no offer from 10.77.0.32") && e.message.contains("10.77.0.33 (offers 10.77.0.250)"),
                "{e}"
            );
        }

        let outside = Offer { offered: ip("10.77.0.20"), ..ours };
        let e = judge(&[outside], dhcp, &ranges, false, "labbr0").unwrap_err();
        assert_eq!(e, Failure::mismatch("10.77.0.32 offered 10.77.0.20, outside every range"));
        assert!(judge(&[outside], dhcp, &[], false, "labbr0").is_ok(), "no ranges: any address");

        let e = judge(&[ours, foreign, foreign], dhcp, &ranges, false, "labbr0").unwrap_err();
        assert_eq!(
            e,
            Failure::mismatch(
                "offer of 10.77.0.150 from 10.77.0.32, but other servers answer too: 10.77.0.33 (offers 10.77.0.250)"
            )
        );
        let relayed = Offer { src: ip("10.77.0.254"), ..foreign };
        let ok = judge(&[foreign, relayed, ours], dhcp, &ranges, true, "labbr0").unwrap();
        assert_eq!(
            ok,
            "offer of 10.77.0.150 from 10.77.0.32 (on labbr0); also answering (allowed): \
             10.77.0.33 (offers 10.77.0.250), 10.77.0.33 (from 10.77.0.254, offers 10.77.0.250)"
        );
    }

    /// No interface of that name (or no right to port 68): the reason, not a panic and not an
    /// empty list of offers (which would read as "no server answered").
    #[tokio::test]
    async fn a_socket_that_cannot_listen_says_why() {
        let e = listen("gw-no-such0").await.unwrap_err();
        assert!(e.starts_with("cannot listen on gw-no-such0 port 68: "), "{e}");
    }
}
