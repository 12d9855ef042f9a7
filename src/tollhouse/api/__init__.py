"""What tollhouse knows of the API, as pure functions: routes, paths, ids, error shapes."""
