//! A thin layer over [`xot`] for the element-and-attribute access that parse and patch need,
//! with names given as plain strings (domain XML's own elements have no namespace).
//!
//! Mutations keep the document readable: a new element is indented like its neighbours, and
//! a removed element takes its leading whitespace with it. Whitespace is not significant in
//! domain XML, so this is cosmetics for people who read a patched document.

use xot::{Node, Xot};

use super::ParseError;

pub(super) struct Dom {
    xot: Xot,
    doc: Node,
    /// The `<domain>` element.
    pub domain: Node,
}

/// A failed tree operation; xot refuses only operations that would break the tree.
pub(super) type Result<T> = std::result::Result<T, xot::Error>;

impl Dom {
    pub fn parse(xml: &str) -> std::result::Result<Dom, ParseError> {
        let mut xot = Xot::new();
        let doc = xot
            .parse(xml)
            .map_err(|e| ParseError::Malformed(e.to_string()))?;
        let domain = xot
            .document_element(doc)
            .map_err(|e| ParseError::Malformed(e.to_string()))?;
        let dom = Dom { xot, doc, domain };
        match dom.local_name(domain) {
            Some("domain") if dom.in_no_namespace(domain) => Ok(dom),
            other => Err(ParseError::NotADomain(other.unwrap_or_default().to_owned())),
        }
    }

    pub fn to_xml(&self) -> Result<String> {
        let mut xml = self.xot.to_string(self.doc)?;
        if !xml.ends_with('\n') {
            xml.push('\n');
        }
        Ok(xml)
    }

    fn local_name(&self, node: Node) -> Option<&str> {
        self.xot
            .element(node)
            .map(|e| self.xot.local_name_str(e.name()))
    }

    fn in_no_namespace(&self, node: Node) -> bool {
        self.xot
            .element(node)
            .is_some_and(|e| self.xot.namespace_for_name(e.name()) == self.xot.no_namespace())
    }

    /// Whether `node` is an element `<name>` in no namespace.
    pub fn is(&self, node: Node, name: &str) -> bool {
        self.local_name(node) == Some(name) && self.in_no_namespace(node)
    }

    /// The child elements of `parent`.
    pub fn elements(&self, parent: Node) -> impl Iterator<Item = Node> + '_ {
        self.xot
            .children(parent)
            .filter(|&n| self.xot.is_element(n))
    }

    /// The child elements `<name>` of `parent`.
    pub fn children<'a>(&'a self, parent: Node, name: &'a str) -> impl Iterator<Item = Node> + 'a {
        self.elements(parent).filter(move |&n| self.is(n, name))
    }

    pub fn child(&self, parent: Node, name: &str) -> Option<Node> {
        self.children(parent, name).next()
    }

    /// The element at `path` below `parent`, following the first match at each step.
    pub fn at(&self, parent: Node, path: &[&str]) -> Option<Node> {
        path.iter()
            .try_fold(parent, |node, name| self.child(node, name))
    }

    /// The `<devices>` children named `name`, in document order.
    pub fn devices(&self, name: &str) -> Vec<Node> {
        match self.child(self.domain, "devices") {
            Some(devices) => self.children(devices, name).collect(),
            None => Vec::new(),
        }
    }

    pub fn attr(&self, node: Node, name: &str) -> Option<&str> {
        let name = self.xot.name(name)?;
        self.xot.get_attribute(node, name)
    }

    /// The element's text, exactly (comments are not text).
    pub fn text(&self, node: Node) -> String {
        self.xot
            .children(node)
            .filter_map(|n| self.xot.text_str(n))
            .collect()
    }

    /// The namespace URI and local name of an element.
    pub fn qualified_name(&self, node: Node) -> Option<(&str, &str)> {
        self.xot.element(node).map(|e| {
            let (local, uri) = self.xot.name_ns_str(e.name());
            (uri, local)
        })
    }

    pub fn set_attr(&mut self, node: Node, name: &str, value: &str) {
        let name = self.xot.add_name(name);
        self.xot.set_attribute(node, name, value);
    }

    pub fn remove_attr(&mut self, node: Node, name: &str) {
        if let Some(name) = self.xot.name(name) {
            self.xot.remove_attribute(node, name);
        }
    }

    /// Keeps only the attributes named in `keep`.
    pub fn retain_attrs(&mut self, node: Node, keep: &[&str]) {
        let names: Vec<_> = self
            .xot
            .attributes(node)
            .keys()
            .filter(|&n| {
                let (local, uri) = self.xot.name_ns_str(n);
                !(uri.is_empty() && keep.contains(&local))
            })
            .collect();
        for name in names {
            self.xot.remove_attribute(node, name);
        }
    }

    /// Replaces the element's content with `text`.
    pub fn set_text(&mut self, node: Node, text: &str) -> Result<()> {
        let children: Vec<Node> = self.xot.children(node).collect();
        for child in children {
            self.xot.remove(child)?;
        }
        self.xot.append_text(node, text)
    }

    /// Removes an element together with the whitespace that indents it.
    pub fn remove(&mut self, node: Node) -> Result<()> {
        if let Some(prev) = self.xot.previous_sibling(node)
            && self.is_blank(prev)
        {
            self.xot.remove(prev)?;
        }
        self.xot.remove(node)
    }

    fn is_blank(&self, node: Node) -> bool {
        self.xot.text_str(node).is_some_and(|t| t.trim().is_empty())
    }

    /// How many elements enclose `node` (0 for `<domain>`), for indenting new elements.
    pub fn depth(&self, node: Node) -> usize {
        // ancestors() counts the node itself and the document node.
        self.xot.ancestors(node).count().saturating_sub(2)
    }

    /// Parses `xml`, one element rendered at the indentation of a child of `parent`, into a
    /// detached element of this document.
    pub fn fragment(&mut self, xml: &str) -> Result<Node> {
        let doc = self.xot.parse(xml)?;
        let element = self.xot.document_element(doc)?;
        self.xot.detach(element)?;
        self.xot.remove(doc)?;
        Ok(element)
    }

    /// Inserts `new` as the last child element of `parent`, indented like its siblings.
    pub fn append(&mut self, parent: Node, new: Node) -> Result<()> {
        match self.elements(parent).last() {
            Some(last) => self.insert_after(last, new),
            None => {
                // Only whitespace (or nothing) inside: lay the element out afresh.
                let blanks: Vec<Node> = self
                    .xot
                    .children(parent)
                    .filter(|&n| self.is_blank(n))
                    .collect();
                for blank in blanks {
                    self.xot.remove(blank)?;
                }
                let depth = self.depth(parent);
                self.xot.append_text(parent, &indent(depth + 1))?;
                self.xot.append(parent, new)?;
                self.xot.append_text(parent, &indent(depth))
            }
        }
    }

    /// Inserts `new` right after the element `anchor`, on a line of its own.
    pub fn insert_after(&mut self, anchor: Node, new: Node) -> Result<()> {
        let indent = indent(self.depth(anchor));
        self.xot.insert_after(anchor, new)?;
        let text = self.xot.new_text(&indent);
        self.xot.insert_before(new, text)
    }

    /// Inserts `new` right before the element `anchor`, on a line of its own.
    pub fn insert_before(&mut self, anchor: Node, new: Node) -> Result<()> {
        let indent = indent(self.depth(anchor));
        self.xot.insert_before(anchor, new)?;
        let text = self.xot.new_text(&indent);
        self.xot.insert_before(anchor, text)
    }

    /// Replaces the element `old` with `new` in the same place.
    pub fn replace(&mut self, old: Node, new: Node) -> Result<()> {
        self.xot.replace(old, new)
    }

    /// Replaces the element `old` with `new`, moving `old`'s child elements named in `keep`
    /// to the end of `new`.
    pub fn replace_keeping(&mut self, old: Node, new: Node, keep: &[&str]) -> Result<()> {
        let kept: Vec<Node> = self
            .elements(old)
            .filter(|&n| keep.iter().any(|k| self.is(n, k)))
            .collect();
        for &child in &kept {
            self.xot.detach(child)?;
        }
        self.xot.replace(old, new)?;
        kept.into_iter()
            .try_for_each(|child| self.append(new, child))
    }

    /// The element `<name>` below `parent`, created at the end if there is none.
    pub fn ensure_child(&mut self, parent: Node, name: &str) -> Result<Node> {
        if let Some(node) = self.child(parent, name) {
            return Ok(node);
        }
        let id = self.xot.add_name(name);
        let node = self.xot.new_element(id);
        self.append(parent, node)?;
        Ok(node)
    }
}

/// A newline and two spaces per level: libvirt's own layout.
fn indent(depth: usize) -> String {
    format!("\n{}", "  ".repeat(depth))
}
