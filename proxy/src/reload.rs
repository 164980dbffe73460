//! RELOAD and SIGHUP: read the configuration again and apply what can change without dropping a
//! client — users and passwords, pool sizes and timeouts, the backend list and probe settings.
//! Listener addresses and the pool mode need a restart, and RELOAD says so.

use std::sync::Arc;

use crate::session::{Ctx, UserDb};
use crate::topology::Operator;

/// Applies the configuration's sources as they are now; returns what happened, or why nothing
/// changed (an invalid configuration is refused whole).
pub async fn reload(ctx: &Ctx) -> Result<String, String> {
    let current = ctx.config.load_full();
    let new = current
        .reload()
        .map_err(|e| format!("configuration not reloaded (nothing changed): {e}"))?;
    let restart = current.restart_needed(&new);
    let new = Arc::new(new);
    ctx.users.store(Arc::new(UserDb::new(&new)));
    ctx.pools.reconfigure(&new);
    let monitor = ctx.topology.operate(Operator::Reload(new.clone())).await?;
    ctx.config.store(new);
    let mut message = format!("configuration reloaded; {monitor}");
    if !restart.is_empty() {
        message.push_str(&format!(
            "; changed but only applied after a restart: {}",
            restart.join(", ")
        ));
    }
    tracing::info!(%message, "reload");
    Ok(message)
}
