"""inspect page."""
import streamlit as st

st.title("Inspect")
