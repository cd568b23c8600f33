//! Which role instances have converged, across hosts: a role on one host starts only when
//! every role it needs has converged on all of its hosts (ldap on id1 waits for dns on ns1).

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

use crate::plan::Plan;
use crate::playbook::catalog::Catalog;

pub struct Board {
    /// role -> host -> None (pending) / Some(ok)
    state: Mutex<HashMap<String, HashMap<String, Option<bool>>>>,
    /// role -> roles of the plan it waits for
    needs: HashMap<String, Vec<String>>,
    tick: watch::Sender<u64>,
}

impl Board {
    pub fn new(plan: &Plan, catalog: &Catalog) -> Board {
        let present: Vec<&str> = plan.steps.iter().map(|s| s.role.as_str()).collect();
        let mut state = HashMap::new();
        let mut needs = HashMap::new();
        for s in &plan.steps {
            state.insert(s.role.clone(), s.hosts.iter().map(|h| (h.clone(), None)).collect::<HashMap<_, _>>());
            let mut n: Vec<String> = catalog
                .get(&s.role)
                .map(|spec| spec.needs.iter().map(|n| n.role.clone()).collect())
                .unwrap_or_default();
            n.retain(|r| present.contains(&r.as_str()));
            needs.insert(s.role.clone(), n);
        }
        let (tick, _) = watch::channel(0);
        Board { state: Mutex::new(state), needs, tick }
    }

    fn bump(&self) {
        self.tick.send_modify(|t| *t += 1);
    }

    /// Record that `role` finished on `host`.
    pub fn finished_on(&self, role: &str, host: &str, ok: bool) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = st.get_mut(role).and_then(|m| m.get_mut(host))
            && slot.is_none()
        {
            *slot = Some(ok);
        }
        drop(st);
        self.bump();
    }

    /// A host is done (or gave up): whatever it did not finish counts as failed.
    pub fn host_done(&self, host: &str) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for m in st.values_mut() {
            if let Some(slot) = m.get_mut(host)
                && slot.is_none()
            {
                *slot = Some(false);
            }
        }
        drop(st);
        self.bump();
    }

    /// Wait until every role `role` needs has converged everywhere; Err names the first that
    /// failed.
    pub async fn wait_for_needs(&self, role: &str) -> Result<(), String> {
        let needs = self.needs.get(role).cloned().unwrap_or_default();
        if needs.is_empty() {
            return Ok(());
        }
        let mut rx = self.tick.subscribe();
        loop {
            {
                let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                let mut pending = false;
                for n in &needs {
                    for (host, s) in st.get(n).into_iter().flatten() {
                        match s {
                            Some(false) => return Err(format!("it needs {n}, which did not converge on {host}")),
                            None => pending = true,
                            Some(true) => {}
                        }
                    }
                }
                if !pending {
                    return Ok(());
                }
            }
            if rx.changed().await.is_err() {
                return Err("the run ended".into());
            }
        }
    }
}
