//! A tiny aligned-table renderer for `ctl` output: left-aligned text, right-aligned
//! numbers, two spaces between columns, no trailing blanks. Widths count characters, so
//! non-ASCII names still line up in a terminal.

/// Column alignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

#[derive(Debug, Clone)]
pub struct Table {
    headers: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[(&'static str, Align)]) -> Table {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are blank and extra cells are ignored.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        fn cell(row: &[String], i: usize) -> &str {
            row.get(i).map(String::as_str).unwrap_or("")
        }
        let mut widths: Vec<usize> = self
            .headers
            .iter()
            .map(|(h, _)| h.chars().count())
            .collect();
        for row in &self.rows {
            for (i, w) in widths.iter_mut().enumerate() {
                *w = (*w).max(cell(row, i).chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.headers.iter().map(|(h, _)| h.to_string()).collect();
        for row in std::iter::once(&header).chain(self.rows.iter()) {
            let mut line = String::new();
            for (i, (&(_, align), &width)) in self.headers.iter().zip(&widths).enumerate() {
                let text = cell(row, i);
                let pad = width - text.chars().count();
                if i > 0 {
                    line.push_str("  ");
                }
                match align {
                    Align::Left => {
                        line.push_str(text);
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                    Align::Right => {
                        line.extend(std::iter::repeat_n(' ', pad));
                        line.push_str(text);
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns() {
        let mut t = Table::new(&[
            ("NAME", Align::Left),
            ("PKTS", Align::Right),
            ("X", Align::Left),
        ]);
        t.row(vec!["a".into(), "1".into(), "".into()]);
        t.row(vec!["longer-näme".into(), "12345".into(), "z".into()]);
        t.row(vec!["short".into()]);
        assert_eq!(
            t.render(),
            "NAME          PKTS  X\n\
             a                1\n\
             longer-näme  12345  z\n\
             short\n"
        );
    }

    #[test]
    fn header_only() {
        let t = Table::new(&[("A", Align::Left), ("B", Align::Right)]);
        assert!(t.is_empty());
        assert_eq!(t.render(), "A  B\n");
    }
}
