"""moerl.data"""
