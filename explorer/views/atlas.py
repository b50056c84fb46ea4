"""atlas page."""
import streamlit as st

st.title("Atlas")
