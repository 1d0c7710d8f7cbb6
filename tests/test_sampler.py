from pointdet.data.dataset import SeededShuffleSampler


def test_ranks_split_one_permutation_without_overlap():
    ranks = [list(SeededShuffleSampler(10, seed=4, rank=r, world_size=2)) for r in range(2)]
    indices = [i for keys in ranks for i, _ in keys]
    assert len(indices) == 10 and sorted(indices) == list(range(10))
    seeds = [s for keys in ranks for _, s in keys]
    assert len(set(seeds)) == 10


def test_epochs_differ_and_skip_resumes_mid_epoch():
    sampler = SeededShuffleSampler(12, seed=0, rank=0, world_size=1)
    sampler.set_epoch(1)
    full = list(sampler)
    sampler.set_epoch(1, skip=5)
    assert list(sampler) == full[5:] and len(sampler) == 7
    sampler.set_epoch(2)
    assert [i for i, _ in sampler] != [i for i, _ in full]
