//! Where an entity lives: rendezvous (highest-random-weight) hashing of the entity key over the
//! names of the live members. Every node computes the same owner from the same member list, and
//! when a member joins or leaves only the keys it wins or held move.

/// A stable 64-bit FNV-1a hash (std's hasher is randomly seeded per process, so it cannot be
/// used across nodes).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// splitmix64's finaliser: FNV alone mixes the low bits poorly, and rendezvous hashing compares
/// whole weights, so every input bit must reach every output bit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn key_hash(key: &str) -> u64 {
    mix(fnv1a(key.as_bytes()))
}

fn member_weight(member: &str, key_hash: u64) -> u64 {
    mix(fnv1a(member.as_bytes()) ^ key_hash)
}

/// The weight of `member` for `key`.
pub fn weight(member: &str, key: &str) -> u64 {
    member_weight(member, key_hash(key))
}

/// The member that owns `key` among `members` (ties broken by name), or `None` when empty.
pub fn owner<'a, I>(key: &str, members: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let key_hash = key_hash(key);
    members
        .into_iter()
        .map(|member| (member_weight(member, key_hash), member))
        .max_by(|(wa, a), (wb, b)| wa.cmp(wb).then_with(|| b.cmp(a)))
        .map(|(_, member)| member)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("node{i}")).collect()
    }

    #[test]
    fn every_node_agrees_whatever_the_member_order() {
        let members = names(3);
        let mut reversed = members.clone();
        reversed.reverse();
        for i in 0..1000 {
            let key = format!("order/{i}");
            assert_eq!(
                owner(&key, members.iter().map(String::as_str)),
                owner(&key, reversed.iter().map(String::as_str))
            );
        }
    }

    #[test]
    fn keys_spread_evenly() {
        let members = names(3);
        let mut counts = std::collections::HashMap::new();
        for i in 0..30_000 {
            let key = uuid::Uuid::now_v7().to_string() + &i.to_string();
            *counts.entry(owner(&key, members.iter().map(String::as_str)).unwrap()).or_insert(0) += 1;
        }
        for (node, count) in counts {
            assert!((9_000..11_000).contains(&count), "{node} owns {count} of 30000");
        }
    }

    #[test]
    fn a_leaving_member_moves_only_its_own_keys() {
        let three = names(3);
        let two: Vec<String> = three.iter().filter(|n| *n != "node2").cloned().collect();
        for i in 0..5000 {
            let key = format!("product/{i}");
            let before = owner(&key, three.iter().map(String::as_str)).unwrap();
            let after = owner(&key, two.iter().map(String::as_str)).unwrap();
            if before != "node2" {
                assert_eq!(before, after, "{key} moved although its owner stayed");
            }
        }
        assert_eq!(owner("x", std::iter::empty()), None);
    }
}
