//! Slicing: evaluate only the policies whose principal scope can match the peer.
//!
//! Cedar evaluates every policy it is handed, so a folder of 10,000 policies would cost 10,000
//! scope checks per hop. At load every policy goes into exactly one bucket by its principal
//! scope:
//!
//! ```text
//! principal == Hop::Workload::"w"      → eq[w]
//! principal in G, principal is T in G  → within[G]
//! principal, principal is T, == other  → unscoped
//! ```
//!
//! A peer `p` can only match `eq[p]`, `within[p]`, `within[a]` for each ancestor `a` of `p`
//! (its trust domain and, through entities.json, its groups) and `unscoped`; every other policy's
//! scope is false for `p`, and Cedar's scope check comes before the condition, so leaving it out
//! changes neither the decision, nor the determining policies, nor the errors. Each bucket is its
//! own `PolicySet`, built once; per peer the list of buckets is precomputed too:
//!
//! - for every workload a policy names or entities.json lists: its own list;
//! - for every trust domain a policy or entities.json names: the list of an unlisted workload of
//!   that trust domain (its only ancestors are the trust domain and the trust domain's own);
//! - otherwise: `unscoped` alone.
//!
//! Each Cedar call has a fixed cost, so a list is merged into one set when the copies this takes
//! stay within a budget (four per policy, or 65,536); past it the buckets stay separate, the
//! engine evaluates each and combines the responses the way Cedar combines policies (forbid
//! wins, errors collected), and memory stays linear in the number of policies. Resource and
//! action scopes are left to Cedar.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use cedar_policy::{Entities, EntityUid, Policy, PolicySet, PrincipalConstraint};
use hopgate_config::SpiffeId;

use crate::entities::Names;

/// The precomputed slices of one snapshot.
#[derive(Debug)]
pub(crate) struct SliceIndex {
    by_principal: HashMap<EntityUid, Vec<Arc<PolicySet>>>,
    by_trust_domain: HashMap<String, Vec<Arc<PolicySet>>>,
    unscoped: Vec<Arc<PolicySet>>,
}

/// Policies grouped by principal scope, before they become sets.
#[derive(Default)]
struct Buckets<'a> {
    eq: HashMap<EntityUid, Vec<&'a Policy>>,
    within: HashMap<EntityUid, Vec<&'a Policy>>,
    unscoped: Vec<&'a Policy>,
}

// === impl SliceIndex ===

impl SliceIndex {
    /// Buckets `policies` and precomputes each known principal's list, merged into one set per
    /// principal while the copies stay within [`merge_budget`].
    pub(crate) fn build(
        policies: &PolicySet,
        entities: &Entities,
        names: &Names,
    ) -> Result<Self, String> {
        let budget = merge_budget(policies.num_of_policies());
        Self::build_with_budget(policies, entities, names, budget)
    }

    fn build_with_budget(
        policies: &PolicySet,
        entities: &Entities,
        names: &Names,
        budget: usize,
    ) -> Result<Self, String> {
        let buckets = Buckets::new(policies, names);
        let eq = to_sets(&buckets.eq)?;
        let within = to_sets(&buckets.within)?;
        let unscoped = match buckets.unscoped.is_empty() {
            true => Vec::new(),
            false => vec![Arc::new(set_of(&buckets.unscoped)?)],
        };
        let mut principals: BTreeSet<EntityUid> = buckets.eq.keys().cloned().collect();
        principals.extend(
            buckets
                .within
                .keys()
                .filter(|uid| uid.type_name() == &names.workload)
                .cloned(),
        );
        let mut trust_domains: BTreeSet<String> = BTreeSet::new();
        for entity in entities.iter() {
            let uid = entity.uid();
            if uid.type_name() == &names.workload {
                principals.insert(uid);
            } else if uid.type_name() == &names.trust_domain {
                trust_domains.insert(uid.id().unescaped().to_owned());
            }
        }
        trust_domains.extend(
            buckets
                .within
                .keys()
                .filter(|uid| uid.type_name() == &names.trust_domain)
                .map(|uid| uid.id().unescaped().to_owned()),
        );

        let list = |own: Option<&EntityUid>, ancestors: Vec<EntityUid>| {
            let mut list: Vec<Arc<PolicySet>> = unscoped.clone();
            if let Some(own) = own {
                list.extend(eq.get(own).cloned());
                list.extend(within.get(own).cloned());
            }
            list.extend(ancestors.iter().filter_map(|a| within.get(a).cloned()));
            list
        };
        let mut by_principal: HashMap<EntityUid, Vec<Arc<PolicySet>>> = principals
            .into_iter()
            .map(|p| {
                let ancestors = workload_ancestors(&p, entities, names);
                let list = list(Some(&p), ancestors);
                (p, list)
            })
            .collect();
        let mut by_trust_domain: HashMap<String, Vec<Arc<PolicySet>>> = trust_domains
            .into_iter()
            .map(|td| {
                let uid = names.trust_domain(&td);
                let mut ancestors = ancestors(&uid, entities);
                ancestors.push(uid);
                (td, list(None, ancestors))
            })
            .collect();
        let copies: usize = by_principal
            .values()
            .chain(by_trust_domain.values())
            .flatten()
            .map(|set| set.num_of_policies())
            .sum();
        if copies <= budget {
            for list in by_principal
                .values_mut()
                .chain(by_trust_domain.values_mut())
            {
                merge(list)?;
            }
        }
        Ok(Self {
            by_principal,
            by_trust_domain,
            unscoped,
        })
    }

    /// The policy sets to evaluate for `principal` of `trust_domain`.
    pub(crate) fn slice(&self, principal: &EntityUid, trust_domain: &str) -> &[Arc<PolicySet>] {
        self.by_principal
            .get(principal)
            .or_else(|| self.by_trust_domain.get(trust_domain))
            .unwrap_or(&self.unscoped)
    }
}

// === impl Buckets ===

impl<'a> Buckets<'a> {
    fn new(policies: &'a PolicySet, names: &Names) -> Self {
        let mut buckets = Self::default();
        for policy in policies.policies() {
            match policy.principal_constraint() {
                PrincipalConstraint::Eq(uid) if uid.type_name() == &names.workload => {
                    buckets.eq.entry(uid).or_default().push(policy);
                }
                PrincipalConstraint::In(uid) | PrincipalConstraint::IsIn(_, uid) => {
                    buckets.within.entry(uid).or_default().push(policy);
                }
                // `==` on another type never matches a workload, but evaluating it is cheap and
                // keeps this index trivially safe.
                PrincipalConstraint::Eq(_)
                | PrincipalConstraint::Any
                | PrincipalConstraint::Is(_) => buckets.unscoped.push(policy),
            }
        }
        buckets
    }
}

/// The ancestors of a workload: from the store when entities.json lists it, else its trust
/// domain and the trust domain's own ancestors (what the per-request entity will have).
fn workload_ancestors(uid: &EntityUid, entities: &Entities, names: &Names) -> Vec<EntityUid> {
    if entities.get(uid).is_some() {
        return ancestors(uid, entities);
    }
    let Ok(id) = SpiffeId::parse(uid.id().unescaped()) else {
        // Load refuses non-canonical workload ids in scopes (CED-05); nothing can match one.
        return Vec::new();
    };
    let td = names.trust_domain(id.trust_domain_name());
    let mut list = ancestors(&td, entities);
    list.push(td);
    list
}

fn ancestors(uid: &EntityUid, entities: &Entities) -> Vec<EntityUid> {
    entities
        .ancestors(uid)
        .map(|a| a.cloned().collect())
        .unwrap_or_default()
}

/// Each Cedar call costs a fixed overhead besides its policies, so a principal's buckets are
/// merged into one set when the copies this takes stay small: four per policy on average, or
/// 65,536 in all. Past that (many policies scoped to a trust domain or a group shared by many
/// named principals) the buckets stay separate and memory stays linear.
fn merge_budget(policies: usize) -> usize {
    policies.saturating_mul(4).max(1 << 16)
}

/// Replaces a list of two or more sets by one set of all their policies.
fn merge(list: &mut Vec<Arc<PolicySet>>) -> Result<(), String> {
    if list.len() < 2 {
        return Ok(());
    }
    let merged = PolicySet::from_policies(list.iter().flat_map(|set| set.policies().cloned()))
        .map_err(|e| e.to_string())?;
    *list = vec![Arc::new(merged)];
    Ok(())
}

fn to_sets(
    buckets: &HashMap<EntityUid, Vec<&Policy>>,
) -> Result<HashMap<EntityUid, Arc<PolicySet>>, String> {
    buckets
        .iter()
        .map(|(uid, policies)| Ok((uid.clone(), Arc::new(set_of(policies)?))))
        .collect()
}

fn set_of(policies: &[&Policy]) -> Result<PolicySet, String> {
    PolicySet::from_policies(policies.iter().map(|p| (*p).clone())).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn ids(sets: &[Arc<PolicySet>]) -> BTreeSet<String> {
        sets.iter()
            .flat_map(|set| set.policies().map(|p| p.id().to_string()))
            .collect()
    }

    #[test]
    fn merged_slices_hold_the_same_policies_as_bucket_lists() {
        let policies = PolicySet::from_str(
            r#"
            permit (principal == Hop::Workload::"spiffe://a.org/w0", action, resource);
            permit (principal == Hop::Workload::"spiffe://a.org/w1", action, resource);
            permit (principal in Hop::TrustDomain::"a.org", action, resource);
            permit (principal in Hop::Workload::"spiffe://a.org/w1", action, resource);
            forbid (principal, action, resource);
            forbid (principal is Hop::Workload in Hop::TrustDomain::"b.org", action, resource);
            "#,
        )
        .unwrap();
        let names = Names::new().unwrap();
        let entities = Entities::empty();
        let lists = SliceIndex::build_with_budget(&policies, &entities, &names, 0).unwrap();
        let merged = SliceIndex::build(&policies, &entities, &names).unwrap();
        for (peer, td) in [
            ("spiffe://a.org/w0", "a.org"),
            ("spiffe://a.org/w1", "a.org"),
            ("spiffe://a.org/w7", "a.org"),
            ("spiffe://b.org/w3", "b.org"),
            ("spiffe://c.org/w9", "c.org"),
        ] {
            let uid = names.workload(&SpiffeId::parse(peer).unwrap());
            assert_eq!(
                ids(lists.slice(&uid, td)),
                ids(merged.slice(&uid, td)),
                "{peer}"
            );
            assert!(merged.slice(&uid, td).len() <= 1, "{peer}");
        }
        let w1 = names.workload(&SpiffeId::parse("spiffe://a.org/w1").unwrap());
        assert_eq!(ids(merged.slice(&w1, "a.org")).len(), 4);
        assert_eq!(lists.slice(&w1, "a.org").len(), 4);
    }
}
