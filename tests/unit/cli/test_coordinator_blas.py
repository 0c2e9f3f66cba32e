import threadpoolctl

from fedlearn.cli.coordinator_cmd import limit_blas_threads


def test_the_coordinator_limits_scipys_blas_too():
    """The fold's BLAS (SciPy's) must be loaded before the limit, or it keeps its threads."""
    controllers = threadpoolctl.ThreadpoolController().lib_controllers
    before = {lib.filepath: lib.num_threads for lib in controllers}
    try:
        limit_blas_threads()
        blas = [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
        assert any("scipy.libs" in i["filepath"] for i in blas), blas  # SciPy's own BLAS
        assert all(i["num_threads"] == 1 for i in blas), blas
    finally:
        for lib in threadpoolctl.ThreadpoolController().lib_controllers:
            lib.set_num_threads(before.get(lib.filepath, lib.num_threads))
