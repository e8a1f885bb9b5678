"""HTTP surface: dependencies, the error mapping, REST routes and webhook receivers."""
