pub mod frame;

pub mod auth;
pub mod build;
pub mod sql_text;
pub mod sqlstate;
pub mod startup;
pub mod views;
