//! The `ecs-renewd` command line.

fn main() {}
