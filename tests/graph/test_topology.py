from editgraph.graph import topology


def test_order_is_sources_first_and_smallest_id_first():
    assert topology.order("dcba", [("d", "a"), ("c", "a")]) == ["b", "c", "d", "a"]


def test_generations_and_cycles_are_deterministic():
    assert topology.generations("abcd", [("a", "c"), ("b", "c"), ("c", "d")]) == [["a", "b"], ["c"], ["d"]]
    edges = [("z", "y"), ("y", "x"), ("x", "z"), ("b", "a"), ("a", "b"), ("q", "q"), ("x", "m")]
    assert topology.order("zyxbaqm", edges) is None
    assert topology.cycles("zyxbaqm", edges) == [["a", "b"], ["q"], ["x", "z", "y"]]


def test_a_long_chain_needs_no_recursion():
    ids = [f"n{i:06d}" for i in range(50_000)]
    chain = list(zip(ids, ids[1:]))
    assert topology.order(ids, chain) == ids
    assert topology.cycles(ids, chain + [(ids[-1], ids[0])]) == [ids]
