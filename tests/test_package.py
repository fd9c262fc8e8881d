import gradconf


def test_top_level_exports_resolve():
    for name in gradconf.__all__:
        assert getattr(gradconf, name) is not None, name
