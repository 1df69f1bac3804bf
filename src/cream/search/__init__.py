"""Search over a trained supernet: evaluating candidates with inherited weights, search strategies."""
