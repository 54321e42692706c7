//! The decision a request earned, kept for the length of the request so the response can
//! carry its headers (set wherever the decision is made, read at the HTTP edge).

use std::cell::RefCell;

use super::Decision;

tokio::task_local! {
    static DECISION: RefCell<Option<Decision>>;
}

/// Runs `fut` with room for the decision the request earns.
pub async fn scope<F: std::future::Future>(fut: F) -> F::Output {
    DECISION.scope(RefCell::new(None), fut).await
}

/// Remembers a decision, so the response carries its headers (outside [`scope`]: nothing).
pub fn note(decision: &Decision) {
    let _ = DECISION.try_with(|d| *d.borrow_mut() = Some(decision.clone()));
}

/// Adds a decision's windows to the one noted so far (token windows beside the request
/// windows): the request is admitted only if both were.
pub fn add(decision: &Decision) {
    let _ = DECISION.try_with(|d| {
        let mut d = d.borrow_mut();
        match d.as_mut() {
            Some(noted) => {
                noted.allowed &= decision.allowed;
                noted.windows.extend(decision.windows.iter().copied());
            }
            None => *d = Some(decision.clone()),
        }
    });
}

/// Takes the decision noted during this request, if any.
pub fn noted() -> Option<Decision> {
    DECISION.try_with(|d| d.borrow_mut().take()).ok().flatten()
}

/// Looks at the decision noted so far, leaving it in place.
pub fn peek<R>(f: impl FnOnce(&Decision) -> R) -> Option<R> {
    DECISION
        .try_with(|d| d.borrow().as_ref().map(f))
        .ok()
        .flatten()
}
