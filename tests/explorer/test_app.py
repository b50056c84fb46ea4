"""Every page of the explorer renders without an exception (streamlit's AppTest)."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = Path(__file__).resolve().parents[2] / "explorer" / "app.py"


def test_the_app_opens_on_its_home_page():
    app = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not app.exception
    assert app.title[0].value == "ProbeX Explorer"
    assert any("Device" in caption.value for caption in app.sidebar.caption)
