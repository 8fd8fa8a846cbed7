//! Rendezvous (highest-random-weight) hashing: which member of a set owns a key. Every member
//! computes the same answer from the same member list, with no coordination: a key goes to
//! the member with the highest `weight(member, key)`. When a member leaves, only its keys move
//! (each to the member with its next highest weight); when one joins, it takes only the keys it
//! now weighs highest, about `1/n` of them, from every other member alike.
//!
//! The weight is FNV-1a 64 of `member \0 key`, finished with the SplitMix64 mixer (FNV alone
//! mixes its last bytes poorly, which skews HRW): stable across processes, platforms and Rust
//! versions (not `std`'s hasher), so servers of different builds agree.

/// The weight of `key` at `member`.
pub fn weight(member: &str, key: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in member.as_bytes().iter().chain(&[0u8]).chain(key.as_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // SplitMix64's finaliser.
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The member owning `key`: the highest weight, ties to the smallest member id. `None` for no
/// members.
pub fn owner<'a, M: AsRef<str>>(key: &str, members: &'a [M]) -> Option<&'a str> {
    members
        .iter()
        .map(AsRef::as_ref)
        .max_by(|a, b| weight(a, key).cmp(&weight(b, key)).then_with(|| b.cmp(a)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn members(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("member-{:010}", i * 7 + 3)).collect()
    }

    fn hosts() -> Vec<String> {
        (0..10_000).map(|i| format!("host-{i}.example")).collect()
    }

    fn assignment(hosts: &[String], m: &[String]) -> HashMap<String, String> {
        hosts.iter().map(|h| (h.clone(), owner(h, m).unwrap().to_owned())).collect()
    }

    #[test]
    fn no_members_no_owner_one_member_owns_all() {
        assert_eq!(owner::<String>("h", &[]), None);
        assert_eq!(owner("h", &["only"]), Some("only"));
    }

    #[test]
    fn the_same_answer_whatever_the_member_order() {
        let mut m = members(5);
        let before = assignment(&hosts(), &m);
        m.reverse();
        assert_eq!(before, assignment(&hosts(), &m));
    }

    #[test]
    fn balanced() {
        for n in [2, 3, 4, 7] {
            let m = members(n);
            let mut count: HashMap<String, usize> = HashMap::new();
            for owner in assignment(&hosts(), &m).into_values() {
                *count.entry(owner).or_default() += 1;
            }
            let fair = 10_000 / n;
            for (member, c) in count {
                // Within 10 % of a fair share (binomial sd is about 1 % at these sizes).
                assert!(c.abs_diff(fair) * 10 <= fair, "{n} members: {member} owns {c}");
            }
        }
    }

    #[test]
    fn a_member_joining_takes_only_its_share() {
        let m = members(4);
        let before = assignment(&hosts(), &m);
        let mut joined = m.clone();
        joined.push("member-9999999999".into());
        let after = assignment(&hosts(), &joined);
        let moved: Vec<_> = hosts().into_iter().filter(|h| before[h] != after[h]).collect();
        // Every moved host went to the newcomer, about 1/5 of them.
        assert!(moved.iter().all(|h| after[h] == "member-9999999999"));
        assert!(moved.len().abs_diff(2_000) <= 200, "{} moved", moved.len());
    }

    #[test]
    fn a_member_leaving_moves_only_its_hosts() {
        let m = members(4);
        let before = assignment(&hosts(), &m);
        let gone = m[1].clone();
        let left: Vec<String> = m.iter().filter(|x| **x != gone).cloned().collect();
        let after = assignment(&hosts(), &left);
        for h in hosts() {
            if before[&h] == gone {
                assert_ne!(after[&h], gone);
            } else {
                assert_eq!(before[&h], after[&h], "{h} moved though its owner stayed");
            }
        }
    }
}
